"""LogHistogram: a run's latency percentiles in constant memory, within half a bin of exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.latency_stats import LogHistogram


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_the_exact_ones_within_a_bin(seed):
    rng = np.random.default_rng(seed)
    values = np.exp(rng.normal(math.log(1.5e-3), 0.6, 20000))   # slot latencies around 1.5 ms
    h = LogHistogram()
    for v in values:
        h.add(float(v))
    size = h.counts.size
    for q in (1, 50, 90, 99, 99.9):
        exact = float(np.percentile(values, q, method="nearest"))
        assert abs(h.percentile(q) / exact - 1) <= 0.0051, q
    assert h.total == values.size and h.counts.size == size < 2000   # constant memory


def test_empty_and_out_of_range():
    h = LogHistogram(lo=1e-3, hi=1.0)
    assert math.isnan(h.percentile(50))
    for v in (0.0, 1e-9, 5.0, 1.0):
        h.add(v)
    assert h.percentile(0) == 1e-3 and h.percentile(100) == 1.0
    h.add(0.02)
    assert abs(h.percentile(50) / 0.02 - 1) <= 0.0051
