"""P1's slot draws on a second thread (P1Env.step) must not change a single number."""

import pytest
import torch

from twin.envs import make_env
from twin.envs.p1 import P1Env
from twin.scene import evolve_p1, p1_draw_normals, sample_p1
from twin.scenarios import get_scenario


def _trajectory(threads: int, steps: int = 4, min_normals: int | None = None):
    torch.set_num_threads(threads)
    env = make_env("p1", num_envs=16, seed=11)
    if min_normals is not None:
        env.parallel_draw_min_normals = min_normals
    env.reset(seed=11)
    g = torch.Generator().manual_seed(5)
    parts, used = [], []
    for _ in range(steps):
        used.append(env._draw_in_parallel())
        r = env.step(env.sample_actions(g))
        parts += [r.rewards["bs0"], r.obs["irs0"].flatten(), r.obs["irs1"].flatten(), r.obs["bs0"].flatten(),
                  torch.view_as_real(env.scene.H_BR).flatten(), torch.view_as_real(env.scene.h_BU).flatten(),
                  r.info["energy"].flatten()]
    return torch.cat([p.float() for p in parts]), used, env


def test_parallel_draw_gives_the_serial_trajectory_bit_for_bit():
    serial, used_serial, _ = _trajectory(1, min_normals=0)
    parallel, used_parallel, env = _trajectory(2, min_normals=0)
    assert not any(used_serial) and all(used_parallel)  # both paths really ran
    assert torch.equal(serial, parallel)
    assert torch.get_num_threads() == 2  # the step restored the caller's thread count


def test_small_batches_draw_inline():
    _, used, _ = _trajectory(2, steps=1)  # 16 envs: far below the hand-off threshold
    assert not any(used)


def test_physics_error_still_joins_the_draw(monkeypatch):
    torch.set_num_threads(2)
    env = make_env("p1", num_envs=4, seed=1)
    env.parallel_draw_min_normals = 0
    env.reset(seed=1)
    acts = env.sample_actions(torch.Generator().manual_seed(0))

    def boom(self, a):
        raise RuntimeError("physics failed")

    monkeypatch.setattr(P1Env, "_physics", boom)
    with pytest.raises(RuntimeError, match="physics failed"):
        env.step(acts)
    assert torch.get_num_threads() == 2


def test_evolve_with_predrawn_normals_equals_drawing_inside():
    scn = get_scenario("p1")
    scene = sample_p1(scn, 8, torch.Generator().manual_seed(2))
    inside = evolve_p1(scene, scn, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    outside = evolve_p1(scene, scn, g, normals=p1_draw_normals(scene, g))
    for name in ("H_BR", "h_RU", "h_BU"):
        assert torch.equal(getattr(inside, name), getattr(outside, name))
