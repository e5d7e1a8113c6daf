import math

import numpy as np
import pytest
import torch

from twin.errors import ConfigError
from twin.signal import effective_channel, rate_bps_hz, sinr
from twin.surface_config import SurfaceConfig


def test_from_phases_rounds_to_nearest_grid_point():
    theta = np.array([0.1, math.pi / 2 - 0.2, math.pi + 0.3, 2 * math.pi - 0.1])
    cfg = SurfaceConfig.from_phases(theta, bits=2)
    assert cfg.phase_idx.tolist() == [0, 1, 2, 0]
    assert np.allclose(cfg.phases_rad(), [0, math.pi / 2, math.pi, 0])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(bits=0, phase_idx=np.zeros(4, int), on=np.ones(4)), "bits"),
        (dict(bits=1, phase_idx=np.array([0, 2]), on=np.ones(2)), "phase_idx"),
        (dict(bits=2, phase_idx=np.zeros(3, int), on=np.ones(4)), "phase_idx/on"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SurfaceConfig(**kwargs)


def test_readback_mismatch_lists_elements():
    a = SurfaceConfig(bits=1, phase_idx=np.array([0, 1, 0, 1]), on=np.ones(4, bool))
    b = SurfaceConfig(bits=1, phase_idx=np.array([0, 1, 1, 1]), on=np.array([1, 1, 1, 0], bool))
    assert a.mismatched_elements(b).tolist() == [2, 3]
    assert a == SurfaceConfig.from_dict(a.to_dict())


def test_single_user_aligned_snr_grows_as_n_squared():
    # One user, one surface, no direct link, unit-gain channels: aligning every element's
    # phase to the cascaded channel gives |sum_n |h_n||^2 = N^2 (coherent combining).
    gen = torch.Generator().manual_seed(0)
    snrs = []
    for n in (8, 16, 32, 64):
        phase_br = torch.rand(1, 1, n, 1, generator=gen, dtype=torch.float64) * 2 * math.pi
        phase_ru = torch.rand(1, 1, 1, n, generator=gen, dtype=torch.float64) * 2 * math.pi
        H_BR = torch.polar(torch.ones_like(phase_br), phase_br)
        h_RU = torch.polar(torch.ones_like(phase_ru), phase_ru)
        h_BU = torch.zeros(1, 1, 1, dtype=torch.complex128)
        cascade = h_RU.conj()[0, 0, 0] * H_BR[0, 0, :, 0]
        phi = torch.polar(torch.ones(n, dtype=torch.float64), -torch.angle(cascade)).reshape(1, 1, n)
        G = effective_channel(H_BR, h_RU, h_BU, phi)
        V = torch.ones(1, 1, 1, dtype=torch.complex128)
        snrs.append(sinr(G, V, 1.0).item())
    assert np.allclose(snrs, [64.0, 256.0, 1024.0, 4096.0])
    assert rate_bps_hz(torch.tensor([3.0])).item() == pytest.approx(2.0)


def test_of_uint8_is_the_constructor_for_every_input():
    """The wire decoder's shortcut keeps the constructor's rules: the same config for valid input
    (the arrays kept as they are), the same ConfigError for invalid, the constructor for the rest."""
    rng = np.random.default_rng(7)
    for bits in (1, 2, 3, 8):
        idx = rng.integers(0, 1 << bits, 16).astype(np.uint8)
        on = rng.random(16) < 0.7
        fast, ref = SurfaceConfig.of_uint8(bits, idx, on), SurfaceConfig(bits, idx, on)
        assert fast.bits == ref.bits and fast.phase_idx is idx and fast.on is on
        np.testing.assert_array_equal(fast.phase_idx, ref.phase_idx)
    empty = SurfaceConfig.of_uint8(2, np.zeros(0, np.uint8), np.zeros(0, bool))
    assert empty.n_elements == 0
    bad = [(1, np.array([0, 2], np.uint8), np.ones(2, bool)),       # index out of range for 1 bit
           (0, np.zeros(2, np.uint8), np.ones(2, bool)),            # resolution 0
           (9, np.zeros(2, np.uint8), np.ones(2, bool)),            # resolution above the maximum
           (2, np.zeros(2, np.uint8), np.ones(3, bool)),            # lengths differ
           (2, np.zeros((2, 1), np.uint8), np.ones((2, 1), bool))]  # not 1-D
    for args in bad:
        with pytest.raises(ConfigError) as fast:
            SurfaceConfig.of_uint8(*args)
        with pytest.raises(ConfigError) as ref:
            SurfaceConfig(*args)
        assert str(fast.value) == str(ref.value)
    other = SurfaceConfig.of_uint8(2, np.array([3, 1], np.int64), np.array([1, 0]))   # other dtypes
    assert other.phase_idx.dtype == np.uint8 and other.on.dtype == bool
