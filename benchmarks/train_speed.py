"""tunewise fit vs the plain SentenceTransformerTrainer script on the demo: throughput and quality.

Issue 17's goal: ``tunewise fit`` on the demo with ``train.precision: auto`` at >= 2x the plain
script's training throughput (fp32, the library's defaults), with the fine-tuned metric within
seed noise. Three columns, alternating run by run (each in a fresh process, who goes first
rotates), so load drift hits all alike:

* ``plain fp32``: ``benchmarks/throughput.py``'s script (random batches, fp32);
* ``auto, random batches``: bf16 autocast, ``train.group_by_length=false`` (the previous default);
* ``auto``: today's defaults (bf16 autocast + length-grouped batches).

Throughput is pairs per second of training (the Trainer's ``train_samples_per_second``), so
less padding counts as speed, which is what a user waits for. Quality: mrr@20 after fine-tuning
over seeds (42, 43, ...).

    python benchmarks/train_speed.py [--seeds 3] [--plain-runs 2]

Writes benchmarks/results/train_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from precision import RESULTS, TUNEWISE, _child, spread  # noqa: E402  (the same child runs)
from throughput import PLAIN  # noqa: E402

VARIANTS = {"auto, random batches": ["train.group_by_length=false"], "auto": []}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plain-runs", type=int, default=2)
    parser.add_argument("--fp32-quality", action="store_true", help="add tunewise fp32 (random batches) runs over the "
                        "same seeds to the stored results: the quality reference (their speed is not compared)")
    args = parser.parse_args()
    from tunewise.demos import demo_config

    if args.fp32_quality:
        fp32_quality(args.seeds)
        return

    cfg = demo_config("/tmp/unused", name="embedding")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"plain fp32": [], **{name: [] for name in VARIANTS}}
    order = list(runs)
    for i in range(args.seeds):
        seed = 42 + i
        for name in order[i % len(order):] + order[:i % len(order)]:
            if name == "plain fp32":
                if len(runs[name]) >= args.plain_runs:
                    continue
                r = _child([PLAIN, str(cfg.train.epochs), str(cfg.train.batch_size)])
                r["samples_per_s"] = r.pop("pairs_per_s")
            else:
                r = _child([TUNEWISE, "embedding", "auto", str(seed), *VARIANTS[name]])
            r["seed"] = seed
            runs[name].append(r)
            print(name, r, file=sys.stderr, flush=True)
    report(cfg, runs, load_before, os.getloadavg())


def fp32_quality(seeds: int) -> None:
    """tunewise in fp32 with random batches (what the plain script trains) over the same seeds, beside the
    stored runs: is ``auto``'s fine-tuned metric within fp32's seed noise?"""
    stored = json.loads((RESULTS / "train_speed.json").read_text())
    runs = [dict(_child([TUNEWISE, "embedding", "fp32", str(42 + i), "train.group_by_length=false"]), seed=42 + i)
            for i in range(seeds)]
    for r in runs:
        print("fp32", r, file=sys.stderr, flush=True)
    fp32 = spread([r["after"] for r in runs])
    auto = stored["summary"]["auto"]["after"]
    gap = auto["mean"] - fp32["mean"]
    noise = max(fp32["std"], auto["std"])
    stored["fp32_quality"] = {"runs": runs, "after": fp32, "gap_auto_minus_fp32": gap, "seed_std": noise,
                              "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    (RESULTS / "train_speed.json").write_text(json.dumps(stored, indent=2))
    md = (RESULTS / "train_speed.md").read_text().rstrip("\n").split("\n\n<!-- fp32 -->")[0]
    per_seed = ", ".join(f"{r['seed']}: {r['after']:.4f}" for r in runs)
    md += (f"\n\n<!-- fp32 -->\nQuality against fp32: tunewise `train.precision=fp32`, random batches (the plain script's "
           f"recipe), same seeds ({per_seed}; measured {stored['fp32_quality']['measured_at']}, speed not compared): "
           f"mrr@20 {fp32['mean']:.4f} ± {fp32['std']:.4f}; `auto` - fp32 = {gap:+.4f}, seed-to-seed std {noise:.4f} "
           f"({'within' if abs(gap) <= 2 * noise else 'BEYOND'} two seed std).\n")
    (RESULTS / "train_speed.md").write_text(md)
    print(md)


def report(cfg, runs: dict[str, list[dict]], load_before, load_after) -> None:
    summary = {name: {k: spread([r[k] for r in rs]) for k in ("samples_per_s", "seconds")} for name, rs in runs.items()}
    for name in VARIANTS:
        summary[name].update({k: spread([r[k] for r in runs[name]]) for k in ("after", "before", "eval_seconds_after")})
    plain = summary["plain fp32"]["samples_per_s"]["mean"]
    speedups = {name: summary[name]["samples_per_s"]["mean"] / plain for name in VARIANTS}
    gap = summary["auto"]["after"]["mean"] - summary["auto, random batches"]["after"]["mean"]
    noise = max(summary[name]["after"]["std"] for name in VARIANTS)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "runs": runs, "summary": summary,
              "speedup_vs_plain": speedups, "quality_gap_grouped_minus_random": gap, "seed_std": noise,
              "load_average_before": load_before, "load_average_after": load_after,
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_speed.json").write_text(json.dumps(result, indent=2))

    def cell(s: dict, fmt: str = ".2f") -> str:
        return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"

    rows = [f"| {name} | {len(runs[name])} | {cell(s['samples_per_s'])} | "
            f"{(s['samples_per_s']['mean'] / plain):.2f}x | {cell(s['seconds'], '.1f')} | "
            + (f"{cell(s['after'], '.4f')} | {cell(s['eval_seconds_after'], '.1f')} |" if "after" in s else "n/a | n/a |")
            for name, s in summary.items()]
    md = [
        "# tunewise fit vs the plain SentenceTransformerTrainer script: the demo's training throughput", "",
        f"The FAQ search demo (packaged all-MiniLM-L6-v2, 400 Swedish pairs, full fine-tuning, {cfg.train.epochs:g} epochs, "
        f"batch {cfg.train.batch_size}, MNRL); each run in a fresh process, columns alternating. CPU: {result['machine']}. "
        f"Measured {result['measured_at']}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(compare the columns, not the seconds, when the machine was shared).", "",
        "| run | runs | train pairs/s | vs plain | train s | mrr@20 after | eval s (after) |",
        "|---|---:|---:|---:|---:|---:|---:|", *rows, "",
        "mean ± sample std over runs (seeds 42, 43, ...; the plain script's seed is its own).", "",
        f"**tunewise `auto` / plain fp32 = {speedups['auto']:.2f}x** (goal >= 2x); bf16 alone (random batches): "
        f"{speedups['auto, random batches']:.2f}x. Quality: grouped - random mrr@20 = {gap:+.4f}, seed-to-seed std "
        f"{noise:.4f} ({'within' if abs(gap) <= 2 * noise else 'BEYOND'} two seed std).",
    ]
    (RESULTS / "train_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
