"""RunLogTail: a growing run log read incrementally, each line once, as `ristwin deploy` shows progress."""

from __future__ import annotations

import os

from controller.runlog import RunLog, RunLogTail, read_runlog


def test_reads_each_new_record_once(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = RunLogTail(path, "slot")
    assert tail.poll() == []                                   # no file yet
    with RunLog(path) as log:
        log.append({"type": "start"})
        for s in range(3):
            log.append({"type": "slot", "slot": s})
        assert [r["slot"] for r in tail.poll()] == [0, 1, 2]
        assert tail.poll() == []
        log.append({"type": "slot", "slot": 3})
        log.append({"type": "stop"})
        assert [r["slot"] for r in tail.poll()] == [3]
    assert [r["slot"] for r in read_runlog(path, "slot")] == [0, 1, 2, 3]


def test_a_line_being_written_waits_for_its_end(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = RunLogTail(path)
    with open(path, "wb") as fh:
        fh.write(b'{"type":"slot","slot":0}\n{"type":"slot","sl')
        fh.flush()
        assert [r["slot"] for r in tail.poll()] == [0]
        fh.write(b'ot":1}\nnot json\n\n')
        fh.flush()
        assert [r["slot"] for r in tail.poll()] == [1]         # joined; the junk line is skipped


def test_a_replaced_or_truncated_log_is_read_from_its_start(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = RunLogTail(path, "slot")
    path.write_text('{"type":"slot","slot":0}\n{"type":"slot","slot":1}\n')
    assert len(tail.poll()) == 2
    os.replace(path, str(path) + ".prev")                      # what a new `ristwin deploy` does
    path.write_text('{"type":"slot","slot":7}\n')
    assert [r["slot"] for r in tail.poll()] == [7]
    path.write_text("")                                        # truncated in place
    assert tail.poll() == []
    path.write_text('{"type":"slot","slot":9}\n')
    assert [r["slot"] for r in tail.poll()] == [9]
