"""P1's slot draws and channel evolution on a second thread (P1Env.step) must not change a single number."""

import pytest
import torch

from twin.envs import make_env
from twin.envs.p1 import P1Env


def _trajectory(threads: int, steps: int = 4, min_normals: int | None = None, overrides: dict | None = None):
    torch.set_num_threads(threads)
    env = make_env("p1", num_envs=16, seed=11, overrides=overrides)
    if min_normals is not None:
        env.parallel_min_normals = min_normals
    env.reset(seed=11)
    g = torch.Generator().manual_seed(5)
    parts, used = [], []
    for _ in range(steps):
        used.append(env._evolve_in_parallel())
        r = env.step(env.sample_actions(g))
        parts += [r.rewards["bs0"], r.obs["irs0"].flatten(), r.obs["irs1"].flatten(), r.obs["bs0"].flatten(),
                  torch.view_as_real(env.scene.H_BR).flatten(), torch.view_as_real(env.scene.h_RU).flatten(),
                  torch.view_as_real(env.scene.h_BU).flatten(), r.info["energy"].flatten(), env.r_req.flatten()]
    return torch.cat([p.float() for p in parts]), used


@pytest.mark.parametrize("overrides", [None, {"rate_req_spread": 0.3, "observation": "csi"}])
def test_parallel_evolution_gives_the_serial_trajectory_bit_for_bit(overrides):
    serial, used_serial = _trajectory(1, min_normals=0, overrides=overrides)
    parallel, used_parallel = _trajectory(2, min_normals=0, overrides=overrides)
    assert not any(used_serial) and all(used_parallel)  # both paths really ran
    assert torch.equal(serial, parallel)
    assert torch.get_num_threads() == 2  # the step restored the caller's thread count


def test_small_batches_and_static_channels_stay_serial():
    _, used = _trajectory(2, steps=1)  # 16 envs: far below the hand-off threshold
    assert not any(used)
    _, used = _trajectory(2, steps=1, min_normals=0, overrides={"fading_correlation": 1.0})
    assert not any(used)  # nothing to draw for the channels


def test_physics_error_still_joins_the_worker_and_restores_threads(monkeypatch):
    torch.set_num_threads(2)
    env = make_env("p1", num_envs=4, seed=1)
    env.parallel_min_normals = 0
    env.reset(seed=1)
    acts = env.sample_actions(torch.Generator().manual_seed(0))

    def boom(self, a):
        raise RuntimeError("physics failed")

    monkeypatch.setattr(P1Env, "_physics", boom)
    with pytest.raises(RuntimeError, match="physics failed"):
        env.step(acts)
    assert torch.get_num_threads() == 2


def test_forked_child_gets_its_own_worker():
    import multiprocessing as mp

    torch.set_num_threads(2)
    env = make_env("p1", num_envs=4, seed=2)
    env.parallel_min_normals = 0
    env.reset(seed=2)
    env.step(env.sample_actions(torch.Generator().manual_seed(0)))  # the parent's worker exists now
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        torch.set_num_threads(2)
        e = make_env("p1", num_envs=4, seed=2)
        e.parallel_min_normals = 0
        e.reset(seed=2)
        r = e.step(e.sample_actions(torch.Generator().manual_seed(0)))
        q.put(float(r.rewards["bs0"].sum()))

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(timeout=30)
    hung = proc.is_alive()
    if hung:
        proc.kill()
        proc.join()
    assert not hung and proc.exitcode == 0  # a child reusing the parent's (absent) thread would hang here
    assert q.get(timeout=5) == pytest.approx(float(env_reward_for_seed_2()), rel=0, abs=0)


def env_reward_for_seed_2() -> torch.Tensor:
    torch.set_num_threads(1)
    e = make_env("p1", num_envs=4, seed=2)
    e.reset(seed=2)
    return e.step(e.sample_actions(torch.Generator().manual_seed(0))).rewards["bs0"].sum()
