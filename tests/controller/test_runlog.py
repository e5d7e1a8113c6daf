"""The run log: one JSON line per record, the same bytes as the recursive walk, one write per line."""

from __future__ import annotations

import json
import math
import os
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.runlog import RunLog, _jsonable, encode_record, read_runlog
from twin.surface_config import SurfaceConfig


def walked(record) -> bytes:
    """What the log wrote before the direct encoder: the recursive walk, then json.dumps."""
    return (json.dumps(_jsonable(record), separators=(",", ":")) + "\n").encode()


def slot_record(x: float = 0.25) -> dict:
    cfg = SurfaceConfig(2, np.array([0, 3, 1], np.int64), np.array([True, False, True]))
    return {
        "type": "slot", "slot": 7, "t": 1.7e9 + x, "latency_s": None, "server_cpu_s": x / 3,
        "missed": ["irs1"], "reward": np.float32(x), "rewards": {"bs0": x, 3: np.float64(-x)},
        "metrics": {"rate": torch.tensor([x, 2 * x]), "sum_rate": torch.tensor(3 * x), "ok": torch.tensor(True),
                    "count": np.int64(4), "flags": np.array([True, False])},
        "agents": {"bs0": {"answered": True, "action": {"V": torch.full((2, 2), x)}, "timing": {"decide_s": x}},
                   "irs0": {"answered": True, "applied": cfg, "action": {"bits": np.array(2)}},
                   "irs1": {"answered": False, "fallback": "safe", "applied": cfg.to_dict(), "pair": (1, 2.5)}},
    }


def test_direct_encoding_is_byte_for_byte_the_walk():
    rec = slot_record()
    assert encode_record(rec) == walked(rec)
    assert json.loads(encode_record(rec))["agents"]["irs0"]["applied"] == {"bits": 2, "phase_idx": [0, 3, 1],
                                                                           "on": [1, 0, 1]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_take_the_walk(bad):
    # a non-finite Python float becomes the string "nan" / "inf" (the walk's rule); inside a tensor
    # it stays a JSON NaN as before
    for rec in ({"type": "slot", "latency_s": bad}, {"m": torch.tensor([bad, 1.0])}, slot_record(bad)):
        assert encode_record(rec) == walked(rec)


@settings(max_examples=80, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True, width=32),
       keys=st.lists(st.text("abc01", min_size=1, max_size=4), max_size=4))
def test_any_slot_record_matches_the_walk(x, keys):
    rec = slot_record(x)
    rec["extra"] = {k: [x, np.float32(x), torch.tensor(x)] for k in keys}
    assert encode_record(rec) == walked(rec)


def test_unwritable_value_raises_like_the_walk():
    with pytest.raises(TypeError):
        encode_record({"x": object()})


def test_lines_round_trip_and_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    with RunLog(path) as log:
        log.append({"type": "start", "t": 1.0})
        for i in range(3):
            log.append(slot_record(i) | {"slot": i})
    with open(path, "ab") as fh:          # a crash in the middle of a line
        fh.write(b'{"type":"slot","slot":3,')
    records = read_runlog(path)
    assert [r["type"] for r in records] == ["start", "slot", "slot", "slot"]
    assert [r["slot"] for r in read_runlog(path, "slot")] == [0, 1, 2]
    assert read_runlog(path, "slot")[2]["metrics"]["rate"] == [2.0, 4.0]


def test_append_after_close_raises_and_reopening_appends(tmp_path):
    path = tmp_path / "run.jsonl"
    log = RunLog(path)
    log.append({"type": "start"})
    log.close()
    log.close()                            # idempotent
    with pytest.raises(ValueError):
        log.append({"type": "slot"})
    with RunLog(path) as again:            # append-only: a second writer never truncates
        again.append({"type": "stop"})
    assert [r["type"] for r in read_runlog(path)] == ["start", "stop"]


def test_each_record_is_one_write_so_concurrent_writers_never_interleave(tmp_path, monkeypatch):
    path = tmp_path / "run.jsonl"
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    big = {"type": "slot", "blob": "x" * 20000}
    with RunLog(path) as log:
        log.append(big)
    assert writes == [encode_record(big)]
    monkeypatch.undo()

    logs = [RunLog(path) for _ in range(4)]

    def writer(i: int) -> None:
        for j in range(150):
            logs[i].append({"type": "slot", "writer": i, "j": j, "pad": "y" * (500 * i)})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1 + 4 * 150
    recs = [json.loads(line) for line in lines[1:]]        # every line whole
    for i in range(4):
        assert [r["j"] for r in recs if r["writer"] == i] == list(range(150))
