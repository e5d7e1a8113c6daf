"""agents.runtime.maq_irs: the fused one-observation MAQ-WP decision equals the generic graph
program step for step (bits, phase indices, ON bits, the remembered resolution), also with
saturated proto-actions; other graphs keep the generic interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.runtime import load_runtime, maq_irs
from tests.agents.test_runtime import _export, _observations


def _irs_programs(rt):
    return {a: rt._numpy[rt.role_of(a)].program for a in rt.agent_ids if a.startswith("irs")}


@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_fused_decision_equals_the_generic_program(scale: float, tmp_path: Path) -> None:
    path, scen, cfg = _export("maq-wp", tmp_path, seed=4, scale=scale, k=50)
    rt = load_runtime(path, allow_torch=False)
    obs = _observations(rt, scen, cfg, 300, seed=5)
    for a, prog in _irs_programs(rt).items():
        assert prog._fused is not None
        s_fused, s_steps = prog.init_state(1), prog.init_state(1)
        for i in range(300):
            x = obs[a][i:i + 1]
            got, ref = prog.run(x, s_fused), prog.run_steps(x, s_steps)
            assert set(got) == set(ref)
            for key in ref:
                assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), (a, i, key)
            assert np.array_equal(s_fused["prev_bits"], s_steps["prev_bits"])
        # batches keep the generic steps
        assert prog.run(obs[a][:4], prog.init_state(4))["bits"].shape == (4,)


@pytest.mark.parametrize("name,overrides", [("maq-pg", {}), ("maq-wp", {"k": 1})])
def test_other_graphs_are_not_fused(name: str, overrides: dict, tmp_path: Path) -> None:
    path, _, _ = _export(name, tmp_path, **overrides)
    rt = load_runtime(path, allow_torch=False)
    # (MAQ-PG's IRS graph has its own fused runner: agents.runtime.maq_pg, tests/agents/test_runtime_fused_pg.py)
    assert not any(isinstance(p._fused, maq_irs._Runner) for p in _irs_programs(rt).values())
