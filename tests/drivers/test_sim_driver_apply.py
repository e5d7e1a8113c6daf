"""The sim driver's apply: the readback check on both of its paths (request latched as is, and
stuck elements that change what is latched)."""

import numpy as np
import pytest

from drivers.base import ReadbackMismatch
from drivers.sim_driver import SimDriver
from twin.errors import ConfigError
from twin.surface_config import SurfaceConfig

N = 12


def test_request_latched_as_is_is_verified_and_read_back():
    with SimDriver(N, (1, 2)) as drv:
        for seed in range(3):
            rng = np.random.default_rng(seed)
            config = SurfaceConfig(2, rng.integers(0, 4, N), rng.random(N) < 0.5)
            applied = drv.apply(config)
            assert applied == config and drv.readback() == config
            record = drv.last_apply
            assert record.verified and record.mismatched.size == 0 and record.seconds >= 0.0
            with pytest.raises(ValueError, match="read-only"):   # shared by every record: not writable
                record.mismatched[:] = 1


def test_stuck_elements_are_compared_even_when_the_request_matches_them():
    with SimDriver(N, (1, 2), stuck=(4,)) as drv:
        # element 4 asked for exactly what it is stuck at (phase 0, ON): a fresh object, no mismatch
        ok = SurfaceConfig(2, np.where(np.arange(N) == 4, 0, 3), np.ones(N, bool))
        applied = drv.apply(ok)
        assert applied == ok and applied is not ok and drv.last_apply.verified
        bad = SurfaceConfig(2, np.full(N, 1), np.zeros(N, bool))
        with pytest.raises(ReadbackMismatch) as exc:
            drv.apply(bad)
        assert exc.value.mismatched.tolist() == [4]
        assert not drv.last_apply.verified and drv.last_apply.mismatched.tolist() == [4]


def test_unknown_on_mismatch_is_refused_on_the_verified_path_too():
    with SimDriver(N, (1,)) as drv:
        with pytest.raises(ConfigError, match="on_mismatch"):
            drv.apply(SurfaceConfig.safe(N), on_mismatch="ignore")
