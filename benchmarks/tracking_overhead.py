"""What experiment tracking costs a demo run (issue 19, item 3: under 2% of the run's time).

Runs ``tunewise demo`` (the packaged MiniLM on the packaged Swedish FAQ) in this process with
``train.report_to=[mlflow, tensorboard]`` against a sqlite MLflow store and times, inside the
same run:

- importing mlflow (once per process; the Trainer's MLflow callback needs it too);
- tunewise's own tracking calls (``RunTracker.start`` / ``finish`` / ``close``: opening and
  ending the run, the config, metrics, intervals, files, the TensorBoard scalars), less the
  training-curve plot, which every run writes with or without a tracker (reported apart);
- the Trainer's tracking callbacks (every event of ``MLflowCallback`` and ``TensorBoardCallback``);

and divides their sum by the run's wall seconds. Creating a new sqlite store (MLflow's table
migrations, once per store) is timed before the run and reported apart. A side-by-side run without tracking would
measure the same thing with the noise of a two-minute run (several % on a shared machine);
timing the calls themselves does not.

Usage: python benchmarks/tracking_overhead.py [--set train.epochs=1 ...] [--out benchmarks/results/tracking_overhead.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

SPENT: dict[str, float] = {}


def timed(owner: type, name: str, bucket: str) -> None:
    """Wrap ``owner.name`` so that its seconds add up in ``SPENT[bucket]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[bucket] = SPENT.get(bucket, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra dotted override")
    parser.add_argument("--out", default="benchmarks/results/tracking_overhead.md")
    args = parser.parse_args()
    out_file = Path(args.out).resolve()

    work = Path(tempfile.mkdtemp(prefix="tunewise-tracking-"))
    os.chdir(work)  # MLflow's default artifact folder (./mlruns) lands here
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    from transformers.integrations.integration_utils import MLflowCallback, TensorBoardCallback
    from transformers.trainer_callback import TrainerCallback

    import tunewise.report.curves
    from tunewise.demos import DEFAULT_DEMO, run_demo
    from tunewise.tracking import RunTracker

    began = time.perf_counter()
    import mlflow

    SPENT["import mlflow"] = time.perf_counter() - began
    began = time.perf_counter()
    mlflow.MlflowClient().search_experiments()  # creates the store's tables
    one_off = time.perf_counter() - began

    for method in ("start", "finish", "close"):
        timed(RunTracker, method, "tunewise calls")
    timed(tunewise.report.curves, "plot_training_curve", "curve")
    events = [name for name in vars(TrainerCallback) if name.startswith("on_")]
    for callback in (MLflowCallback, TensorBoardCallback):
        for name in events:
            if name in vars(callback):
                timed(callback, name, "trainer callbacks")
        timed(callback, "__init__", "trainer callbacks")

    start = time.perf_counter()
    result = run_demo(DEFAULT_DEMO, output_dir=str(work / "demo"),
                      overrides=["train.report_to=[mlflow,tensorboard]", *args.overrides])
    wall = time.perf_counter() - start
    train_seconds = result.metrics["train"]["seconds"]
    curve = SPENT.pop("curve", 0.0)
    SPENT["tunewise calls"] -= curve  # finish() draws it; it is no tracking cost
    total = sum(SPENT.values())
    rows = [(bucket, seconds) for bucket, seconds in SPENT.items()] + [("tracking, all", total)]
    lines = [
        "# Experiment tracking overhead (`benchmarks/tracking_overhead.py`)",
        "",
        f"`tunewise demo` with `train.report_to=[mlflow, tensorboard]`, a sqlite MLflow store created just before; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        + (f"; overrides: {', '.join(args.overrides)}" if args.overrides else "") + ".",
        "",
        f"The run: {wall:.1f} s wall, {train_seconds:.1f} s training.",
        "",
        "| what | seconds | share of the run's wall time |",
        "|---|---:|---:|",
        *[f"| {bucket} | {seconds:.2f} | {100 * seconds / wall:.2f}% |" for bucket, seconds in rows],
        "",
        f"Target: under 2% of the run. Measured: {100 * total / wall:.2f}%.",
        "",
        f"Apart: creating the new sqlite store (MLflow's table migrations, once per store): {one_off:.2f} s; "
        f"the training-curve plot (every run, tracker or not): {curve:.2f} s.",
        "",
    ]
    text = "\n".join(lines)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
