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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_run_killed_after_a_checkpoint_resumes_on_every_rank(tiny_st_model, pairs_file, tmp_path):
    """Both ranks checkpoint into the run's work folder; a killed launch continues from it with --resume
    and ends where an uninterrupted launch ends."""
    import signal
    import time

    from safetensors.torch import load_file

    from tunewise.checkpoints import DONE_FILE, work_folder

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def launch(out, port, *extra):
        cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "-m", "tunewise.cli.app", "fit",
               "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out), "--epochs", "3", "--json",
               "--set", "train.batch_size=8", *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)

    whole = launch(tmp_path / "whole", 29541)
    out_whole, err = whole.communicate(timeout=900)
    assert whole.returncode == 0, _errors(err)

    cut = launch(tmp_path / "cut", 29542)
    folder = work_folder(tmp_path / "cut")
    deadline = time.monotonic() + 900
    while not list(folder.glob(f"checkpoint-*/{DONE_FILE}")):
        if cut.poll() is not None or time.monotonic() > deadline:
            cut.kill()
            pytest.fail("no checkpoint before the launch ended: " + _errors(cut.communicate()[1]))
        time.sleep(0.2)
    import psutil

    launcher = psutil.Process(cut.pid)
    procs = [*launcher.children(recursive=True), launcher]
    for proc in procs:  # every rank dies at once, as on a pre-empted machine
        proc.send_signal(signal.SIGKILL)
    cut.wait(timeout=60)
    psutil.wait_procs(procs, timeout=60)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    done = sorted(p.parent.name for p in folder.glob(f"checkpoint-*/{DONE_FILE}"))
    assert done and {f"rng_state_{r}.pth" for r in (0, 1)} <= {p.name for p in (folder / done[0]).iterdir()}

    resumed = launch(tmp_path / "cut", 29543, "--resume")
    out_resumed, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, _errors(err)
    a, b = json.loads(out_whole), json.loads(out_resumed)
    assert b["resumed"]["from_step"] >= 1 and b["train"]["steps"] == a["train"]["steps"]
    assert b["after"] == a["after"]
    wa, wb = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert not folder.exists(), "the work folder goes once the resumed run is published"


def _errors(stderr: str) -> str:
    """The lines of a torchrun launch's stderr that say what failed."""
    return "\n".join(line for line in stderr.splitlines() if "rror" in line or "Traceback" in line)[-3000:]
