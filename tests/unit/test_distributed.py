"""Multi-process training through torchrun (2 CPU ranks, gloo): the path multi-GPU users take."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_two_ranks_publish_once(tiny_st_model, pairs_file, tmp_path):
    out = tmp_path / "run"
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", "29533", "-m", "tunewise.cli.app", "fit",
           "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out), "--epochs", "2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout)  # exactly one JSON document: only rank 0 reports
    # One process would take 48 pairs / batch 16 = 3 steps per epoch, 6 in all; two ranks share the data.
    assert 0 < metrics["train"]["steps"] < 6
    assert (out / "model.safetensors").is_file() and json.loads((out / "metrics.json").read_text())["after"]
    assert not list(tmp_path.glob(".run.tmp-*"))
