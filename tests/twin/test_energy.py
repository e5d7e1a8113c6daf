import math

import pytest
import torch

from twin.energy import affordable, consumption_units, energy_deficit, harvest, step_buffer
from twin.errors import ConfigError


def test_clamp_at_e_min_before_arrivals():
    # E=3, spend 10 -> floored at E_min=1, then +2 arrivals = 3 (not 3-10+2 = -5).
    e = step_buffer(torch.tensor([[3.0]]), torch.tensor([[10.0]]), torch.tensor([[2.0]]), 1.0, 20.0)
    assert e.item() == 3.0


def test_clamp_at_e_max():
    e = step_buffer(torch.tensor([[18.0]]), torch.tensor([[1.0]]), torch.tensor([[7.0]]), 0.0, 20.0)
    assert e.item() == 20.0


def test_interior_is_plain_balance():
    e = step_buffer(torch.tensor([[5.0, 9.0]]), torch.tensor([[1.5, 2.0]]), torch.tensor([[2.0, 0.0]]), 0.0, 20.0)
    torch.testing.assert_close(e, torch.tensor([[5.5, 7.0]]))


def test_batched_bounds_hold_over_random_trajectory():
    g = torch.Generator().manual_seed(0)
    B, L = 256, 3
    e = torch.full((B, L), 5.0)
    for _ in range(50):
        c = torch.rand(B, L, generator=g) * 6
        a = harvest(2.2, (B, L), g)
        e = step_buffer(e, c, a, 1.0, 10.0)
        assert bool((e >= 1.0).all()) and bool((e <= 10.0).all())


def test_poisson_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    a = harvest(2.2, (200_000,), g)
    # Poisson(2.2): mean = var = 2.2; std error of mean ~ sqrt(2.2/2e5) = 0.0033.
    assert abs(a.mean().item() - 2.2) < 0.02
    assert abs(a.var().item() - 2.2) < 0.05
    assert bool((a == a.round()).all())


def test_harvest_reproducible_with_generator():
    a1 = harvest(torch.tensor([1.0, 3.0]), (4, 2), torch.Generator().manual_seed(7))
    a2 = harvest(torch.tensor([1.0, 3.0]), (4, 2), torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2)


def test_consumption_units():
    # 20 elements * 6 mW for 0.5 s = 60 mJ = 6 units of 10 mJ.
    c = consumption_units(torch.tensor([[0.12]]), slot_s=0.5, unit_j=0.01)
    assert math.isclose(c.item(), 6.0, rel_tol=1e-6)
    with pytest.raises(ConfigError, match="slot_s"):
        consumption_units(torch.tensor([1.0]), slot_s=0.0, unit_j=1.0)


def test_deficit_and_affordable():
    e = torch.tensor([[5.0, 5.0]])
    c = torch.tensor([[3.0, 6.0]])
    torch.testing.assert_close(energy_deficit(e, c, 1.0), torch.tensor([[0.0, -2.0]]))
    assert affordable(e, c, 1.0).tolist() == [[True, False]]


def test_bad_bounds_raise():
    with pytest.raises(ConfigError, match="e_min"):
        step_buffer(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), 5.0, 1.0)
