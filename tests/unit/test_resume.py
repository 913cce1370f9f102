"""Resuming a killed ``tunewise fit`` from its checkpoints (tunewise.checkpoints, tasks.training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tunewise
from tunewise.checkpoints import (
    DONE_FILE,
    latest_checkpoint,
    mark_complete,
    parse_every,
    plan_resume,
    work_folder,
)
from tunewise.config import dump_config, load_config
from tunewise.errors import TunewiseError


def run_config(model, data, out, *extra: str):
    return load_config(None, [f"model={model}", f"data.train={data}", f"output_dir={out}", "train.epochs=3",
                              "train.batch_size=8", "train.learning_rate=1e-3", "eval.examples=0", *extra])


def _interrupt_after(step: int):
    """A callback raising KeyboardInterrupt (Ctrl-C) once training has passed ``step``."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step > step:
                raise KeyboardInterrupt

    return Interrupt()


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("text,unit,value", [("epoch", "epoch", 0), ("off", "off", 0), (False, "off", 0), (500, "steps", 500), ("25", "steps", 25),
                                             ("10min", "minutes", 10), ("0.5 min", "minutes", 0.5)])
def test_parse_every(text, unit, value):
    every = parse_every(text)
    assert (every.unit, every.value) == (unit, value)
    assert parse_every(every.text) == every


@pytest.mark.parametrize("bad", ["0", "-3", "hourly", "10h", "1.5"])
def test_parse_every_refuses_other_values(bad):
    with pytest.raises(TunewiseError, match="train.checkpoint_every: .* is not epoch, off, a number of steps"):
        parse_every(bad)


def test_config_refuses_bad_checkpoint_options(tiny_st_model, pairs_file, tmp_path):
    with pytest.raises(TunewiseError, match="train.checkpoint_every"):
        run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=weekly")
    with pytest.raises(TunewiseError, match="train.keep_checkpoints: must be at least 1"):
        run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.keep_checkpoints=0")


def test_interrupted_run_resumes_to_the_same_metrics(tiny_st_model, pairs_file, tmp_path):
    whole = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "whole"))
    assert whole.metrics["resumed"] is None
    assert not work_folder(tmp_path / "whole").exists(), "checkpoints are removed once the run is published"

    cfg = run_config(tiny_st_model, pairs_file, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(cfg, callbacks=[_interrupt_after(6)])  # Ctrl-C after the first epoch's checkpoint
    assert not (tmp_path / "cut").exists(), "nothing that looks like a result before the run has finished"
    folder = work_folder(tmp_path / "cut")
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-6"]
    assert (folder / "checkpoint-6" / DONE_FILE).is_file()
    # the checkpoint holds what resuming needs; weights are safetensors
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= \
        {p.name for p in (folder / "checkpoint-6").iterdir()}

    resumed = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "cut"), resume=True)
    assert resumed.after == whole.after
    wa, wb = _weights(whole.output_dir), _weights(resumed.output_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    record = json.loads((tmp_path / "cut" / "metrics.json").read_text())["resumed"]
    assert record["from_step"] == 6 and record["from_epoch"] == 1.0 and record["attempt"] == 2
    assert record["seconds_lost"] >= 0 and record["train_seconds_before"] > 0 and record["skipped_checkpoints"] == []
    assert resumed.metrics["train"]["steps"] == whole.metrics["train"]["steps"] == 18
    assert not folder.exists()


def test_interrupted_run_needs_resume_or_overwrite(tiny_st_model, pairs_file, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r"), callbacks=[_interrupt_after(6)])
    with pytest.raises(TunewiseError, match=r"an interrupted run left checkpoints in .* \(last: step 6, epoch 1\); "
                                            "pass --resume to continue it, or --overwrite to start over"):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r"))
    # a changed config is refused before any work, naming every changed key
    with pytest.raises(TunewiseError, match=r"--resume: the config differs from the interrupted run's \(seed: 42 -> 7; "
                                            r"train.learning_rate: 0.001 -> 0.002\)"):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.learning_rate=2e-3", "seed=7"), resume=True)
    # options that do not change what is trained may differ
    plan = plan_resume(tmp_path / "r", run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.keep_checkpoints=5"),
                       resume=True, overwrite=False)
    assert plan.resumed and plan.point.step == 6
    # so may nothing else: the data file itself is part of the fingerprint
    pairs_file.write_text(pairs_file.read_text() + pairs_file.read_text().splitlines(keepends=True)[0])
    with pytest.raises(TunewiseError, match=r"data.train \(the file changed\)"):
        plan_resume(tmp_path / "r", run_config(tiny_st_model, pairs_file, tmp_path / "r"), resume=True, overwrite=False)
    plan = plan_resume(tmp_path / "r", run_config(tiny_st_model, pairs_file, tmp_path / "r"), resume=False, overwrite=True)
    assert not plan.resumed and "discarding the checkpoints" in plan.notes[0]


def test_resume_with_nothing_to_resume_starts_over(tiny_st_model, pairs_file, tmp_path):
    plan = plan_resume(tmp_path / "r", run_config(tiny_st_model, pairs_file, tmp_path / "r"), resume=True, overwrite=False)
    assert not plan.resumed and plan.notes == [f"--resume: no complete checkpoint in {work_folder(tmp_path / 'r')}; "
                                               "starting from the beginning"]


def _fake_checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.full((64,), float(step))}, str(path / "model.safetensors"))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    mark_complete(path, step=step, epoch=step / 10, train_seconds=float(step))
    return path


def test_a_corrupt_or_partial_checkpoint_is_skipped_for_the_one_before(tmp_path):
    folder = tmp_path / ".run.checkpoints"
    _fake_checkpoint(folder, 10)
    newest = _fake_checkpoint(folder, 20)
    partial = folder / "checkpoint-30"  # killed while the Trainer was writing it: no completion marker
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    size = (newest / "model.safetensors").stat().st_size
    with open(newest / "model.safetensors", "r+b") as f:  # a torn write after the marker: size differs
        f.truncate(100)
    point = latest_checkpoint(folder)
    assert point.checkpoint == folder / "checkpoint-10" and point.step == 10 and point.train_seconds == 10.0
    assert point.skipped == ["checkpoint-30: partial (its writing was interrupted)",
                             f"checkpoint-20: model.safetensors has 100 bytes, {size} were written"]
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-10"], "broken checkpoints are removed"


def test_a_garbled_safetensors_header_is_detected(tmp_path):
    folder = tmp_path / ".run.checkpoints"
    _fake_checkpoint(folder, 10)
    path = _fake_checkpoint(folder, 20) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"garbagegarba"  # same size, unreadable header
    path.write_bytes(bytes(data))
    point = latest_checkpoint(folder)
    assert point.step == 10 and point.skipped[0].startswith("checkpoint-20: model.safetensors is not readable safetensors")


def test_plan_resume_says_which_checkpoint_was_skipped(tiny_st_model, pairs_file, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=3",
                                "train.keep_checkpoints=3"), callbacks=[_interrupt_after(6)])
    folder = work_folder(tmp_path / "r")
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    (folder / "checkpoint-6" / "optimizer.pt").unlink()
    plan = plan_resume(tmp_path / "r", run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=3",
                                                  "train.keep_checkpoints=3"), resume=True, overwrite=False)
    assert plan.point.step == 3
    assert plan.notes[0] == "checkpoint checkpoint-6: optimizer.pt is missing; using the one before it"


def test_checkpoint_every_steps_keeps_the_last_k(tiny_st_model, pairs_file, tmp_path):
    seen: list[list[str]] = []
    from transformers import TrainerCallback

    folder = work_folder(tmp_path / "r")

    class Look(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            seen.append(sorted(p.name for p in folder.glob("checkpoint-*")))

    result = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=4",
                                     "train.keep_checkpoints=2"), callbacks=[Look()])
    assert seen[-1] == ["checkpoint-16", "checkpoint-18"] or seen[-1] == ["checkpoint-12", "checkpoint-16"]
    assert max(len(s) for s in seen) == 2
    assert result.metrics["train"]["steps"] == 18 and not folder.exists()


def test_checkpoint_every_off_writes_nothing(tiny_st_model, pairs_file, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=off"),
                     callbacks=[_interrupt_after(6)])
    assert not work_folder(tmp_path / "r").exists()


@pytest.mark.slow
def test_sigkill_then_resume_from_the_command_line(tiny_st_model, pairs_file, tmp_path):
    """A real process killed with SIGKILL after its first checkpoint; `tunewise fit --resume` finishes it
    with the metrics of an uninterrupted run."""
    cfg = run_config(tiny_st_model, pairs_file, tmp_path / "killed")
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(cfg))
    # the run to kill: slowed down per step so that the kill lands mid-training on any machine
    script = tmp_path / "slow_fit.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from transformers import TrainerCallback
        import tunewise

        class Slow(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(0.5)

        tunewise.fit({str(config_file)!r}, callbacks=[Slow()])
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = work_folder(tmp_path / "killed") / "checkpoint-6" / DONE_FILE
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed").exists()

    resumed = subprocess.run([sys.executable, "-m", "tunewise.cli.app", "fit", str(config_file), "--resume"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step 6 (epoch 1)" in resumed.stderr
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    whole = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "whole"))
    assert metrics["after"] == whole.after
    assert metrics["resumed"]["from_step"] == 6 and metrics["resumed"]["seconds_lost"] >= 0
    assert not work_folder(tmp_path / "killed").exists()


def test_cli_resume_with_a_changed_config_exits_2(tiny_st_model, pairs_file, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r"), callbacks=[_interrupt_after(6)])
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.epochs=4")))
    result = CliRunner().invoke(app, ["fit", str(config_file), "--resume"])
    assert result.exit_code == 2
    assert "train.epochs: 3.0 -> 4.0" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_checkpoint_every_minutes_saves_on_the_clock(tiny_st_model, pairs_file, tmp_path):
    from transformers import TrainerCallback

    saved: list[int] = []

    class Look(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved.append(state.global_step)

    with pytest.raises(KeyboardInterrupt):  # 0.0001 min: a checkpoint after (about) every step
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "r", "train.checkpoint_every=0.0001min"),
                     callbacks=[Look(), _interrupt_after(4)])
    assert saved and saved[0] <= 2
    point = latest_checkpoint(work_folder(tmp_path / "r"), remove_broken=False)
    assert point.checkpoint is not None and point.step == saved[-1]
    assert len(list(work_folder(tmp_path / "r").glob("checkpoint-*"))) <= 2  # train.keep_checkpoints


def test_interrupted_image_run_resumes_with_the_same_augmentations(tiny_resnet, tmp_path):
    """Random crops, flips and jitter come from the checkpointed stream: the resumed run ends bit-identical."""
    import random

    from PIL import Image

    rng = random.Random(0)
    root = tmp_path / "imgs"
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (24 + i, 24), tuple(c + rng.randint(-25, 25) for c in colour)).save(root / label / f"{i}.png")

    def cfg(out):
        return load_config(None, ["task=image-classification", f"model={tiny_resnet}", f"data.train={root}", f"output_dir={out}",
                                  "image.size=32", "train.epochs=2", "train.batch_size=6", "train.learning_rate=1e-3",
                                  "data.eval_fraction=0.25", "eval.examples=0"])

    whole = tunewise.fit(cfg(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(cfg(tmp_path / "cut"), callbacks=[_interrupt_after(2)])  # 2 steps an epoch: stops in the second
    resumed = tunewise.fit(cfg(tmp_path / "cut"), resume=True)
    assert resumed.metrics["resumed"]["from_step"] == whole.metrics["train"]["steps"] // 2 == 2
    wa, wb = _weights(whole.output_dir), _weights(resumed.output_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.after == whole.after
