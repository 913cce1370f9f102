"""Cost of the budget planner's time curve against one plain run of the same length.

The time sweep (issue 4) evaluates ONE training run after every epoch instead of training
1, 2, ... E epochs separately. Its cost must stay within 1.3x of one plain run of the longest
length. In one process, on the demo data (packaged MiniLM, Swedish FAQ):

* plain: fresh pre-trained model, train E epochs at N pairs, evaluate once at the end;
* curve: fresh pre-trained model, the same training with
  :class:`~tunewise.budget.timecurve.TimeCurveCallback` evaluating after every epoch;
* separate (estimated, not run): E runs of 1..E epochs, each with its final evaluation,
  from the plain run's per-epoch training time and evaluation time.

Ratio = wall seconds of the curve / wall seconds of the plain run (model load excluded in both).
Both runs share one process and machine, so a loaded CPU slows both alike. The plain run
goes first; a warmed-up process slightly favours the curve, so use ``--repeats`` to see
the noise.

Usage: python benchmarks/budget_timecurve.py [--epochs 4] [--size 400] [--repeats 1]
    [--out benchmarks/results/budget_timecurve.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def one_run(task, data, cfg, device: str, curve: bool) -> dict:
    from tunewise.budget.timecurve import TimeCurveCallback
    from tunewise.run import train_with_strategy
    from tunewise.strategies import resolve_strategy

    strategy, options = resolve_strategy(cfg)
    model = strategy.prepare(task.load_model(cfg, device), task, options, cfg)
    callbacks = [TimeCurveCallback(task, model, data, cfg)] if curve else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        stats, _ = train_with_strategy(strategy, options, task, model, data, cfg, workdir=Path(workdir),
                                       callbacks=callbacks)
    if curve:
        evals = [p.eval_seconds for p in callbacks[0].points]
        metric = callbacks[0].points[-1].metric
    else:
        result = task.evaluate(model, data, cfg)
        evals, metric = [result.seconds], result.metrics[cfg.eval.primary]
    wall = time.perf_counter() - start
    return {"wall": wall, "evals": evals, "metric": metric, "points": len(evals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--out", default="benchmarks/results/budget_timecurve.md")
    args = parser.parse_args()

    import torch

    from tunewise.demos import demo_config
    from tunewise.models.loading import pick_device
    from tunewise.run import quiet_libraries
    from tunewise.tasks import TASKS

    quiet_libraries()
    cfg = demo_config(tempfile.mkdtemp(), overrides=[f"train.epochs={args.epochs}", f"strategy.name={args.strategy}"])
    task = TASKS.get(cfg.task)()
    data = task.prepare_data(cfg)
    data = task.subset(data, list(range(min(args.size, task.n_train(data)))))
    device = pick_device(cfg.train.device)
    rows = []
    for r in range(args.repeats):
        plain = one_run(task, data, cfg, device, curve=False)
        curve = one_run(task, data, cfg, device, curve=True)
        train = plain["wall"] - plain["evals"][0]
        eval_s = plain["evals"][0]
        e = int(round(args.epochs))
        separate = sum(train * k / args.epochs + eval_s for k in range(1, e + 1))
        rows.append((r, plain, curve, separate))
        print(f"repeat {r}: plain {plain['wall']:.1f} s, curve {curve['wall']:.1f} s, "
              f"ratio {curve['wall'] / plain['wall']:.3f}, separate runs ~{separate:.0f} s")

    lines = [
        "# Budget planner: time-curve cost vs one plain run",
        "",
        f"`python benchmarks/budget_timecurve.py --epochs {args.epochs:g} --size {args.size} --repeats {args.repeats}"
        f" --strategy {args.strategy}`",
        "",
        f"Demo data (packaged all-MiniLM-L6-v2, Swedish FAQ), {task.n_train(data)} training pairs, "
        f"{args.epochs:g} epochs, strategy {args.strategy}, device {device}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}. Model loading is outside both timings.",
        "",
        "| repeat | plain run s (train + 1 eval) | time curve s (train + eval every epoch) | ratio | evals | "
        "eval s each | separate 1..E runs s (estimated) | metric plain | metric curve |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, plain, curve, separate in rows:
        lines.append(f"| {r} | {plain['wall']:.1f} | {curve['wall']:.1f} | **{curve['wall'] / plain['wall']:.3f}** | "
                     f"{curve['points']} | {sum(curve['evals']) / len(curve['evals']):.1f} | {separate:.0f} | "
                     f"{plain['metric']:.4f} | {curve['metric']:.4f} |")
    lines += ["", "Target (issue 4): ratio <= 1.3. The curve's extra cost is its E - 1 extra evaluations; "
              "the ratio therefore grows when evaluation is slow relative to an epoch (large eval sets, "
              "few training items) and shrinks with longer epochs.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
