"""Percentiles of a run of any length in constant memory.

The twin server reports its slot latency p50 / p99 when a run ends; a deployment may run for
weeks (``slots = 0``), so it keeps counts in log-spaced bins instead of every latency."""

from __future__ import annotations

import math

import numpy as np


class LogHistogram:
    """Counts of positive values in bins ``rel`` wide (relative) from ``lo`` to ``hi``: each
    percentile comes back within ``rel`` / 2 of a value in its bin (~1900 counters for 1 us to
    100 s at 1%). Values at or below ``lo`` count in the first bin, at or above ``hi`` in the last."""

    def __init__(self, lo: float = 1e-6, hi: float = 100.0, rel: float = 0.01) -> None:
        self.lo, self.hi = lo, hi
        self._step = math.log1p(rel)
        self._n = int(math.ceil(math.log(hi / lo) / self._step)) + 1
        self.counts = np.zeros(self._n + 1, dtype=np.int64)
        self.total = 0

    def add(self, value: float) -> None:
        if value >= self.hi:
            i = self._n
        elif value > self.lo:
            i = min(self._n - 1, int(math.log(value / self.lo) / self._step) + 1)
        else:
            i = 0
        self.counts[i] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) as its bin's geometric centre; nan when empty."""
        if not self.total:
            return math.nan
        rank = int(round(q / 100.0 * (self.total - 1)))   # the nearest-rank element, 0-based
        i = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if i == 0:
            return self.lo
        if i >= self._n:
            return self.hi
        return self.lo * math.exp((i - 0.5) * self._step)
