"""The resumable result store: fingerprints, resume, torn lines, and a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tunewise
from tunewise.budget.roi import BudgetPoint
from tunewise.budget.store import ResultStore, config_fingerprint
from tunewise.errors import TunewiseError

CONFIG = {"model": "tiny", "lr": 2e-5, "sizes": [25, 50], "task": {"name": "search", "k": 20}}


def _point(size, seed=0, **kw):
    return BudgetPoint(size, seed, 0.5, 0.6, 1.5, 0.5, **kw)


def test_fingerprint_is_canonical():
    fp = config_fingerprint(CONFIG)
    assert len(fp) == 64 and int(fp, 16) >= 0  # sha256 hex
    reordered = {"task": {"k": 20, "name": "search"}, "sizes": [25, 50], "lr": 2e-5,
                 "model": "tiny"}
    assert config_fingerprint(reordered) == fp  # key order does not matter
    assert config_fingerprint({**CONFIG, "lr": 3e-5}) != fp  # a value does
    assert config_fingerprint({**CONFIG, "sizes": (25, 50)}) == fp  # tuple == list in JSON
    assert config_fingerprint({**CONFIG, "output": "/x"}, ignore=["output"]) == fp
    assert config_fingerprint({**CONFIG, "path": Path("/a")}) == config_fingerprint(
        {**CONFIG, "path": "/a"}
    )
    with pytest.raises(TunewiseError, match="NaN"):
        config_fingerprint({"lr": float("nan")})


def test_append_points_done_roundtrip(tmp_path):
    store = ResultStore(tmp_path / "out" / "results.jsonl", config_fingerprint(CONFIG), CONFIG)
    assert store.points() == [] and store.done() == set()
    store.append(_point(25, extra={"peak_mb": 12.5}))
    store.append(_point(np.int64(50), seed=np.int64(1)))  # numpy scalars from a sweep
    store.append(_point(1000, epoch=2.0, kind="time"))
    pts = store.points()
    assert [p.size for p in pts] == [25, 50, 1000]
    assert pts[0].extra == {"peak_mb": 12.5} and pts[0] == _point(25)
    assert store.done() == {("data", 25, 0, None), ("data", 50, 1, None), ("time", 1000, 0, 2.0)}
    header = store.header
    assert header["fingerprint"] == config_fingerprint(CONFIG)
    assert header["config"]["task"] == {"k": 20, "name": "search"}
    assert not list(tmp_path.glob("out/.*tmp"))  # header was written via a temp file


def test_reopen_resumes_and_runs_only_missing_points(tmp_path):
    path, fp = tmp_path / "results.jsonl", config_fingerprint(CONFIG)
    first = ResultStore(path, fp, CONFIG)
    for size in (25, 50):
        first.append(_point(size))
    again = ResultStore(path, fp, CONFIG)
    planned = {("data", s, seed, None) for s in (25, 50, 100) for seed in (0, 1)}
    assert planned - again.done() == {
        ("data", 25, 1, None), ("data", 50, 1, None), ("data", 100, 0, None), ("data", 100, 1, None)
    }
    again.append(_point(25))  # a rerun of a point replaces it, never duplicates it
    assert len(again) == 2


def test_changed_config_is_refused_or_started_fresh(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultStore(path, config_fingerprint(CONFIG), CONFIG).append(_point(25))
    changed = {**CONFIG, "lr": 1e-4}
    with pytest.raises(TunewiseError, match=r"--output: .*different config.*--fresh"):
        ResultStore(path, config_fingerprint(changed), changed)
    fresh = ResultStore(path, config_fingerprint(changed), changed, fresh=True)
    assert fresh.points() == []  # never mixed with the old points
    assert fresh.header["config"]["lr"] == 1e-4
    stale = list(tmp_path.glob("results.stale-*.jsonl"))
    assert len(stale) == 1 and "\"size\": 25" in stale[0].read_text()  # old file kept aside
    # --fresh on an unreadable file moves it aside too (it is never deleted).
    other = tmp_path / "other.jsonl"
    other.write_text("garbage")
    assert ResultStore(other, "fp", fresh=True).points() == []
    assert list(tmp_path.glob("other.stale-*.jsonl"))[0].read_text() == "garbage"


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    path, fp = tmp_path / "results.jsonl", config_fingerprint(CONFIG)
    store = ResultStore(path, fp, CONFIG)
    store.append(_point(25))
    store.append(_point(50))
    with open(path, "ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"eval_seconds": 0.5, "kind": "data", "metric_af')
    assert [p.size for p in store.points()] == [25, 50]
    reopened = ResultStore(path, fp, CONFIG)
    assert reopened.torn_lines == 1
    reopened.append(_point(100))
    assert [p.size for p in ResultStore(path, fp, CONFIG).points()] == [25, 50, 100]
    assert path.read_text().count("\n") == 4  # header + 3 whole lines, the fragment is gone


def test_complete_object_without_newline_is_kept(tmp_path):
    path, fp = tmp_path / "results.jsonl", config_fingerprint(CONFIG)
    ResultStore(path, fp, CONFIG)
    line = json.dumps({**_point(25).__dict__, "extra": {}})
    with open(path, "a") as fh:  # killed between the closing brace and the newline
        fh.write(line)
    store = ResultStore(path, fp, CONFIG)
    store.append(_point(50))
    assert [p.size for p in store.points()] == [25, 50]


def test_damaged_middle_line_and_foreign_file_are_errors(tmp_path):
    path, fp = tmp_path / "results.jsonl", config_fingerprint(CONFIG)
    store = ResultStore(path, fp, CONFIG)
    with open(path, "a") as fh:
        fh.write("not json\n")
    store.append(_point(25))
    with pytest.raises(TunewiseError, match="line 2"):
        store.points()
    other = tmp_path / "notes.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(TunewiseError, match="not a tunewise result store"):
        ResultStore(other, fp)


CHILD = textwrap.dedent(
    """
    import sys
    from tunewise.budget.roi import BudgetPoint
    from tunewise.budget.store import ResultStore
    store = ResultStore(sys.argv[1], sys.argv[2])
    i = 0
    while True:
        # 20 kB lines: bigger than a buffered write, so a store that wrote a line in pieces
        # would show torn lines here; append() writes each line with one os.write call.
        store.append(BudgetPoint(i + 1, 0, 0.5, 0.6, 1.0, 0.1, extra={"pad": "x" * 20000}))
        print(i + 1, flush=True)  # reported only after append() returned
        i += 1
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_mid_sweep_loses_no_finished_point(tmp_path):
    path, fp = tmp_path / "results.jsonl", config_fingerprint(CONFIG)
    ResultStore(path, fp, CONFIG)  # header first, as the sweep runner does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(tunewise.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), fp], env=env,
                             stdout=subprocess.PIPE, text=True)
    finished = []
    deadline = time.monotonic() + 60
    try:
        while len(finished) < 30 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            finished.append(int(line))
        os.kill(child.pid, signal.SIGKILL)  # mid-sweep: it is appending the next point now
    finally:
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(finished) >= 30
    store = ResultStore(path, fp, CONFIG)  # reopening repairs a torn tail, if any
    stored = {p.size for p in store.points()}
    assert set(finished) <= stored  # every reported point survived the kill
    assert stored == set(range(1, len(stored) + 1))  # and nothing in between is missing
    store.append(BudgetPoint(10**6, 0, 0.5, 0.6, 1.0, 0.1))  # the rerun appends cleanly
    assert 10**6 in {p.size for p in ResultStore(path, fp, CONFIG).points()}
