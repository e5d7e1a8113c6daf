import pytest
import torch

from agents.buffers import ReplayBuffer
from twin.errors import ConfigError


def _transition(start: int, n: int) -> dict:
    ids = torch.arange(start, start + n)
    return {
        "obs": {"irs0": ids[:, None].float().repeat(1, 3), "bs0": ids[:, None].float()},
        "action": {"irs0": {"bits": ids % 3 + 1, "on": (ids % 2 == 0)[:, None].repeat(1, 4)}},
        "reward": ids.float(),
    }


def test_batched_add_keeps_rows_aligned_and_types():
    buf = ReplayBuffer(16)
    buf.add(_transition(0, 5))
    buf.add(_transition(5, 3))
    assert len(buf) == 8
    s = buf.sample(64, torch.Generator().manual_seed(0))
    assert s["obs"]["irs0"].shape == (64, 3) and s["action"]["irs0"]["on"].dtype == torch.bool
    ids = s["reward"].long()
    assert ids.max() < 8  # never samples unfilled rows
    # every field of one sampled row belongs to the same transition
    assert torch.equal(s["obs"]["irs0"][:, 0].long(), ids)
    assert torch.equal(s["action"]["irs0"]["bits"], ids % 3 + 1)
    assert torch.equal(s["action"]["irs0"]["on"][:, 0], ids % 2 == 0)


def test_ring_overwrites_oldest_first():
    buf = ReplayBuffer(6)
    buf.add(_transition(0, 4))
    buf.add(_transition(4, 4))  # rows 0 and 1 are overwritten by 6 and 7
    assert len(buf) == 6
    seen = set(buf.sample(500, torch.Generator().manual_seed(1))["reward"].long().tolist())
    assert seen == {2, 3, 4, 5, 6, 7}
    buf.add(_transition(100, 20))  # larger than capacity: the newest 6 survive
    seen = set(buf.sample(500, torch.Generator().manual_seed(2))["reward"].long().tolist())
    assert seen == set(range(114, 120))


def test_seeded_sampling_and_state_dict_resume_exactly():
    a = ReplayBuffer(32)
    for i in range(5):
        a.add(_transition(4 * i, 4))
    state = a.state_dict()
    b = ReplayBuffer(32)
    b.load_state_dict(state)
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        sa, sb = a.sample(10, ga), b.sample(10, gb)
        assert torch.equal(sa["reward"], sb["reward"]) and torch.equal(sa["action"]["irs0"]["on"], sb["action"]["irs0"]["on"])
    # both continue identically after more adds (position restored, not just contents)
    a.add(_transition(100, 30))
    b.add(_transition(100, 30))
    assert torch.equal(a.sample(50, torch.Generator().manual_seed(3))["reward"],
                       b.sample(50, torch.Generator().manual_seed(3))["reward"])
    # survives torch.save / weights_only load (how checkpoints store it)
    import io

    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    c = ReplayBuffer(32)
    c.load_state_dict(torch.load(f, weights_only=True))
    assert len(c) == 20


def test_bad_transitions_are_refused():
    buf = ReplayBuffer(8)
    buf.add(_transition(0, 2))
    with pytest.raises(ConfigError, match="fields differ"):
        buf.add({"reward": torch.zeros(2)})
    bad = _transition(0, 2)
    bad["obs"]["irs0"] = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match="leading batch"):
        buf.add(bad)
    with pytest.raises(ConfigError, match="empty"):
        ReplayBuffer(4).sample(1, torch.Generator())
    with pytest.raises(ConfigError, match="capacity"):
        ReplayBuffer(8).load_state_dict(ReplayBuffer(4).state_dict())
