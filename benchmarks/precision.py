"""fp32 vs bf16 (CPU autocast) on the packaged demos: training speed, evaluation time and quality.

The FAQ search demo (packaged all-MiniLM-L6-v2, 400 Swedish pairs, its default full fine-tuning:
3 epochs, batch 16, MNRL) runs with ``train.precision`` fp32 and bf16 over 3 seeds; the plain
SentenceTransformerTrainer script of ``benchmarks/throughput.py`` (fp32, the library's default,
same data, epochs, batch) is the reference for throughput. Runs alternate (fp32, bf16, plain,
then the next seed in another order) and each runs in a fresh process, so that drift in machine
load hits every column alike. The classification demo (``--task classification``) compares
quality only (no plain script).

    python benchmarks/precision.py [--seeds 3] [--task embedding|classification] [--no-plain]

Writes benchmarks/results/precision[-classification].md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))

from throughput import PLAIN  # noqa: E402  (the same plain script, so the two benchmarks agree)

TUNEWISE = r'''
import json, sys, tempfile
import tunewise
from tunewise.demos import demo_config
name, precision, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = demo_config(tempfile.mkdtemp() + "/run", name=name, overrides=[f"train.precision={precision}", f"seed={seed}",
                                                                     "eval.examples=0", *sys.argv[4:]])
from rich.console import Console
m = tunewise.fit(cfg, console=Console(quiet=True)).metrics
t = m["train"]
print("RESULT " + json.dumps({"seconds": t["seconds"], "samples_per_s": t["samples_per_second"], "precision": t.get("precision"),
                              "mfu": (t.get("flops") or {}).get("mfu"), "primary": m["primary_metric"],
                              "before": m["before"][m["primary_metric"]], "after": m["after"][m["primary_metric"]],
                              "eval_seconds_before": m["eval"]["seconds_before"], "eval_seconds_after": m["eval"]["seconds_after"],
                              "peak_mib": m["memory"]["peak_mib"],
                              "estimate_mib": (m["memory"].get("estimated_bytes") or 0) / 2**20}))
'''


def _child(args: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation and range of one column over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def parse_log(path: Path) -> dict[str, list[dict]]:
    """The runs a (possibly interrupted) benchmark printed to stderr, one ``name {result}`` line each."""
    import ast

    runs: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        for name in ("plain fp32", "fp32", "bf16"):
            if line.startswith(name + " {"):
                runs.setdefault(name, []).append(ast.literal_eval(line[len(name) + 1:]))
                break
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--task", default="embedding", choices=("embedding", "classification"))
    parser.add_argument("--no-plain", action="store_true")
    parser.add_argument("--epochs", type=float, default=None, help="override the demo's epochs (a loaded machine)")
    parser.add_argument("--from-log", type=Path, help="write the results of the runs an interrupted benchmark logged")
    parser.add_argument("--load", type=float, nargs=2, default=None, help="with --from-log: load averages before/after")
    parser.add_argument("--machine", help="with --from-log: the machine the logged runs ran on")
    args = parser.parse_args()
    from tunewise.demos import demo_config

    extra = [f"train.epochs={args.epochs}"] if args.epochs else []
    cfg = demo_config("/tmp/unused", name=args.task, overrides=extra)
    plain = args.task == "embedding" and not args.no_plain
    if args.from_log:
        runs = parse_log(args.from_log)
        load_before, load_after = ((args.load[0],), (args.load[1],)) if args.load else ((float("nan"),), os.getloadavg())
    else:
        load_before = os.getloadavg()
        runs = collect(args, cfg, extra, plain)
        load_after = os.getloadavg()
    report(args, cfg, extra, runs, load_before, load_after)


def _machine(args: argparse.Namespace) -> str:
    return getattr(args, "machine", None) or f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def collect(args: argparse.Namespace, cfg, extra: list[str], plain: bool) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": [], **({"plain fp32": []} if plain else {})}
    order = list(runs)
    for i in range(args.seeds):
        seed = 42 + i
        for name in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
            if name == "plain fp32":
                r = _child([PLAIN, str(cfg.train.epochs), str(cfg.train.batch_size)])
                r["samples_per_s"] = r.pop("pairs_per_s")
            else:
                r = _child([TUNEWISE, args.task, name, str(seed), *extra])
            r["seed"] = seed
            runs[name].append(r)
            print(name, r, file=sys.stderr, flush=True)
    return runs


def report(args: argparse.Namespace, cfg, extra: list[str], runs: dict[str, list[dict]], load_before, load_after) -> None:
    plain = "plain fp32" in runs
    summary = {}
    for name, rs in runs.items():
        if name == "plain fp32" and "samples_per_s" not in rs[0]:
            for r in rs:
                r["samples_per_s"] = r.pop("pairs_per_s")
        summary[name] = {k: spread([r[k] for r in rs]) for k in ("samples_per_s", "seconds", "peak_mib")}
        if name != "plain fp32":
            summary[name].update({k: spread([r[k] for r in rs]) for k in ("after", "eval_seconds_after", "eval_seconds_before")})
            summary[name]["before"] = rs[0]["before"]
            summary[name]["seeds"] = len(rs)
    primary = runs["fp32"][0]["primary"]
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    gap = summary["bf16"]["after"]["mean"] - summary["fp32"]["after"]["mean"]
    seed_spread = max(summary["fp32"]["after"]["std"], summary["bf16"]["after"]["std"])
    result = {"task": args.task, "machine": _machine(args),
              "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "seeds": seeds, "primary": primary,
              "runs": runs, "summary": summary, "quality_gap_bf16_minus_fp32": gap, "seed_std": seed_spread,
              "load_average_before": load_before, "load_average_after": load_after,
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    if plain:
        result["speedup_bf16_vs_plain"] = summary["bf16"]["samples_per_s"]["mean"] / summary["plain fp32"]["samples_per_s"]["mean"]
    result["speedup_bf16_vs_fp32"] = summary["bf16"]["samples_per_s"]["mean"] / summary["fp32"]["samples_per_s"]["mean"]
    stem = "precision" if args.task == "embedding" else f"precision-{args.task}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))

    def cell(s: dict, fmt: str = ".2f") -> str:
        return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"

    rows = []
    for name, s in summary.items():
        quality = f"{cell(s['after'], '.4f')}" if "after" in s else "n/a"
        evals = f"{cell(s['eval_seconds_after'])}" if "eval_seconds_after" in s else "n/a"
        before_s = f"{cell(s['eval_seconds_before'])}" if "eval_seconds_before" in s else "n/a"
        mfus = [r["mfu"] for r in runs[name] if r.get("mfu") is not None]
        mfu = f"{statistics.fmean(mfus):.1%}" if mfus else "n/a"
        rows.append(f"| {name} | {cell(s['samples_per_s'])} | {mfu} | {cell(s['seconds'], '.1f')} | {before_s} | {evals} | "
                    f"{quality} | {s['peak_mib']['mean']:.0f} |")
    md = [
        f"# fp32 vs bf16 autocast on CPU: the {args.task} demo", "",
        f"Demo {'defaults' if not extra else 'settings'} (full fine-tuning, {cfg.train.epochs:g} epochs, "
        f"batch {cfg.train.batch_size}), seeds {seeds}, each run in a fresh process, columns alternating. "
        f"CPU: {result['machine']}. Measured {result['measured_at']}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
        "after: the machine is shared with other jobs, so absolute seconds are inflated; compare the columns.", "",
        f"| run | train samples/s | MFU | train s | eval s (before) | eval s (after) | {primary} after | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"mean ± sample std over seeds; {primary} before fine-tuning: {summary['fp32']['before']:.4f} (fp32), "
        f"{summary['bf16']['before']:.4f} (bf16).", "",
        f"**bf16/fp32 training throughput = {result['speedup_bf16_vs_fp32']:.2f}x**"
        + (f"; **bf16 tunewise / plain fp32 script = {result['speedup_bf16_vs_plain']:.2f}x** (goal >= 2x)." if plain else "."),
        f"Quality: bf16 - fp32 {primary} = {gap:+.4f}, "
        + (f"seed-to-seed std {seed_spread:.4f} ({'within' if abs(gap) <= 2 * seed_spread else 'BEYOND'} two seed std)."
           if min(len(runs["fp32"]), len(runs["bf16"])) > 1 else "one seed each: no seed-to-seed spread was measured."),
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
