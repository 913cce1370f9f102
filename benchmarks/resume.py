"""What a kill costs: a run killed at 60% and resumed vs the same run uninterrupted (issue 19, item 1).

A small real run: the packaged MiniLM on the packaged Swedish FAQ (the default demo), a seeded
subset of ``--items`` training pairs, ``--epochs`` epochs, a checkpoint every epoch (the
default). Three processes of ``tunewise fit`` on the same config, one after the other:

1. uninterrupted;
2. the same, SIGKILLed once its progress note (``heartbeat.json``) shows 60% of the steps done;
3. ``tunewise fit --resume``, which continues from the last complete checkpoint.

Target: (2) + (3) - (1) <= one checkpoint interval (an epoch's training) + start-up (what a
process does besides training: imports, loading, the "before" evaluation; taken as (1)'s
non-training share, which over-counts by its "after" evaluation). The resumed run's metrics
must equal the uninterrupted run's (same seed, CPU).

On a shared machine wall seconds swing with the other jobs, so the comparison is made in CPU
seconds of the three processes (user + system, from ``getrusage`` of the reaped children), which
contention disturbs far less; wall seconds are shown beside them. The interval and start-up in
CPU seconds are (1)'s CPU seconds split in the proportions of its wall clock.

Usage: python benchmarks/resume.py [--items 40] [--epochs 5] [--batch-size 8] [--max-seq-length 32] [--threads 1]
       [--out benchmarks/results/resume.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_children() -> float:
    """User + system CPU seconds of every reaped child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fit(config: Path, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tunewise.cli.app", "fit", str(config), "--json", *extra],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fit failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done


def killed_fit(config: Path, heartbeat: Path, kill_step: int) -> tuple[float, int]:
    """Wall seconds until SIGKILL, and the step the heartbeat showed."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli.app", "fit", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step = 0
    while proc.poll() is None:
        try:
            step = json.loads(heartbeat.read_text())["step"]
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= kill_step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - start, step
        time.sleep(0.1)
    raise SystemExit("the run finished before it could be killed; raise --epochs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (OMP_NUM_THREADS)")
    parser.add_argument("--out", default="benchmarks/results/resume.md")
    args = parser.parse_args()
    os.environ["TUNEWISE_CACHE"] = tempfile.mkdtemp(prefix="tunewise-bench-")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the fit processes inherit it

    from tunewise.checkpoints import HEARTBEAT_FILE, work_folder
    from tunewise.config import dump_config
    from tunewise.demos import demo_config

    root = Path(tempfile.mkdtemp(prefix="tunewise-resume-"))
    configs = {}
    for name in ("whole", "killed"):
        cfg = demo_config(str(root / name), overrides=[f"data.max_train={args.items}", f"train.epochs={args.epochs}",
                                                       f"train.batch_size={args.batch_size}",
                                                       f"train.max_seq_length={args.max_seq_length}",
                                                       "overwrite=false", "eval.examples=0"])
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(dump_config(cfg))

    cpu0 = cpu_children()
    whole_wall, whole = run_fit(configs["whole"])
    cpu1 = cpu_children()
    whole_metrics = json.loads(whole.stdout)
    steps, train_seconds = whole_metrics["train"]["steps"], whole_metrics["train"]["seconds"]
    kill_step = int(0.6 * steps + 0.999)
    kill_wall, killed_at = killed_fit(configs["killed"], work_folder(root / "killed") / HEARTBEAT_FILE, kill_step)
    cpu2 = cpu_children()
    resumed_wall, resumed = run_fit(configs["killed"], "--resume")
    cpu3 = cpu_children()
    resumed_metrics = json.loads(resumed.stdout)
    cpu = {"whole": cpu1 - cpu0, "killed": cpu2 - cpu1, "resumed": cpu3 - cpu2}

    interval = train_seconds / args.epochs
    startup = whole_wall - train_seconds
    overhead = kill_wall + resumed_wall - whole_wall
    bound = interval + startup
    share = cpu["whole"] / whole_wall  # CPU seconds per wall second of the uninterrupted run
    cpu_interval, cpu_startup = interval * share, startup * share
    cpu_overhead = cpu["killed"] + cpu["resumed"] - cpu["whole"]
    cpu_bound = cpu_interval + cpu_startup
    record = resumed_metrics["resumed"]
    same = resumed_metrics["after"] == whole_metrics["after"]
    primary = whole_metrics["primary_metric"]
    lines = [
        "# Resume after a kill: the cost of a SIGKILL at 60%",
        "",
        f"`python benchmarks/resume.py --items {args.items} --epochs {args.epochs} --batch-size {args.batch_size} "
        f"--max-seq-length {args.max_seq_length} --threads {args.threads}`: packaged MiniLM, Swedish FAQ demo, "
        f"{whole_metrics['train']['examples']} training pairs, {args.epochs} epochs ({steps} steps), a checkpoint every "
        "epoch (the default: weights, optimizer, scheduler, RNG); three `tunewise fit` processes one after the other.",
        "",
        "| | CPU seconds | wall seconds |",
        "|---|---:|---:|",
        f"| uninterrupted run (training {train_seconds:.1f} s wall) | {cpu['whole']:.1f} | {whole_wall:.1f} |",
        f"| killed run, until SIGKILL at step {killed_at} of {steps} | {cpu['killed']:.1f} | {kill_wall:.1f} |",
        f"| resumed run (`--resume`, from step {record['from_step']}) | {cpu['resumed']:.1f} | {resumed_wall:.1f} |",
        f"| **overhead** = killed + resumed - uninterrupted | **{cpu_overhead:.1f}** | {overhead:.1f} |",
        f"| one checkpoint interval (an epoch's training) | {cpu_interval:.1f} | {interval:.1f} |",
        f"| start-up (the uninterrupted run's non-training share; includes its 'after' evaluation) | {cpu_startup:.1f} | {startup:.1f} |",
        f"| bound = interval + start-up | {cpu_bound:.1f} | {bound:.1f} |",
        "",
        f"Overhead within the bound (CPU seconds): **{'yes' if cpu_overhead <= cpu_bound else 'NO'}**; in wall seconds: "
        f"{'yes' if overhead <= bound else 'no'} (contended). metrics.json `resumed`: "
        f"seconds lost {record['seconds_lost']:.1f} (training redone after the last checkpoint), from epoch {record['from_epoch']:g}.",
        f"Resumed {primary} {resumed_metrics['after'][primary]:.6f} vs uninterrupted {whole_metrics['after'][primary]:.6f}: "
        f"all after-metrics identical: **{same}**.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (contended: absolute seconds are "
        f"noisy, the three runs ran back to back), Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
