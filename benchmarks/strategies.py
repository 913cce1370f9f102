"""Strategies side by side on the demo data (packaged MiniLM + Swedish FAQ, 400 training pairs).

1. ``head`` feature cache: one process, a fresh cache. Epoch 1 builds the cache (runs the frozen
   backbone over every training text); later epochs read it. For the "re-runs the backbone"
   side the same head trains with ``cache: false``, where every epoch encodes the texts again.
   Ratio = seconds of an epoch that re-runs the backbone / mean seconds of a cached epoch.
   Both are measured in this one process, so a shared, loaded CPU slows both alike.
2. ``lora`` against ``full``: trainable-parameter fraction, training seconds and peak memory,
   read from a ``tunewise compare`` folder (``--compare DIR``) or from a fresh compare run.

Usage: python benchmarks/strategies.py [--epochs 4] [--compare runs/compare] [--out benchmarks/results/strategies.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def head_cache_benchmark(epochs: int) -> dict:
    os.environ["TUNEWISE_CACHE"] = tempfile.mkdtemp(prefix="tunewise-bench-")  # a cold cache
    from tunewise.demos import demo_config
    from tunewise.strategies import resolve_strategy
    from tunewise.tasks import TASKS

    out = {}
    for cache in (True, False):
        cfg = demo_config(tempfile.mkdtemp(), overrides=[f"train.epochs={epochs}", f"strategy={{name: head, cache: {str(cache).lower()}}}"])
        strategy, options = resolve_strategy(cfg)
        task = TASKS.get("embedding")()
        data = task.prepare_data(cfg)
        model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
        start = time.perf_counter()
        stats = strategy.train(model, task, data, options, cfg, workdir=Path(tempfile.mkdtemp()))
        out["cached" if cache else "uncached"] = {**stats.details, "wall_seconds": round(time.perf_counter() - start, 3)}
    cached = out["cached"]
    uncached_epochs = out["uncached"]["epoch_seconds"][1:]  # each re-encodes every text first
    out["backbone_epoch_seconds"] = round(sum(uncached_epochs) / len(uncached_epochs), 4)
    out["cached_epoch_seconds"] = cached["later_epoch_seconds_mean"]
    out["first_epoch_seconds"] = cached["first_epoch_seconds"]
    out["speedup_vs_backbone_epoch"] = round(out["backbone_epoch_seconds"] / out["cached_epoch_seconds"], 1)
    out["speedup_vs_first_epoch"] = round(out["first_epoch_seconds"] / out["cached_epoch_seconds"], 1)
    return out


def lora_vs_full(compare_dir: str | None, epochs: int) -> list[dict]:
    if compare_dir:
        from tunewise.compare import load_rows

        # wait for a compare running beside this benchmark rather than compete with it
        while not (Path(compare_dir) / "compare.json").is_file():
            time.sleep(30)
        return load_rows(compare_dir)
    from tunewise.compare import compare
    from tunewise.demos import demo_config

    target = compare_dir or tempfile.mkdtemp()
    cfg = demo_config(target, overrides=[f"train.epochs={epochs}"])
    return compare(cfg, ["full", "lora"], target)["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--compare", default=None, help="a tunewise compare folder to read full/lora from")
    parser.add_argument("--out", default="benchmarks/results/strategies.md")
    args = parser.parse_args()
    import torch

    head = head_cache_benchmark(args.epochs)
    rows = lora_vs_full(args.compare, 1)
    by = {r["strategy"]: r for r in rows}
    lines = [
        "# Strategies benchmark (demo: MiniLM-L6 + Swedish FAQ, 400 training pairs)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Command: `python benchmarks/strategies.py`.", "",
        "## head: feature cache", "",
        f"{head['cached']['feature_cache']['texts']} distinct training texts; {args.epochs} epochs each, measured in one process.", "",
        "| epoch | seconds |", "|---|---:|",
        f"| first (builds the cache: backbone over every text, then a head epoch) | {head['first_epoch_seconds']:.3f} |",
        f"| epoch that re-runs the frozen backbone (cache: false) | {head['backbone_epoch_seconds']:.3f} |",
        f"| later epoch, cached features (mean of {args.epochs - 1}) | {head['cached_epoch_seconds']:.4f} |", "",
        f"**Speedup of a cached epoch: {head['speedup_vs_backbone_epoch']}x** against an epoch that re-runs the backbone "
        f"({head['speedup_vs_first_epoch']}x against the first epoch). Target: >= 50x.", "",
        "## lora against full", "",
        "| strategy | trainable params | fraction | training seconds | samples/s | peak memory (MiB) | mrr@20 after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("full", "lora"):
        if name in by:
            r = by[name]
            lines.append(f"| {name} | {r['trainable_params']:,} | {r['trainable_fraction'] * 100:.2f}% | {r['seconds']:.1f} | "
                         f"{r['samples_per_second']:.1f} | {r['peak_mib']} | {r['after']:.4f} |")
    if "full" in by and "lora" in by:
        f, lo = by["full"], by["lora"]
        lines += ["", f"lora trains {lo['trainable_params'] / f['trainable_params'] * 100:.2f}% of full's parameters, "
                  f"in {lo['seconds'] / f['seconds']:.2f}x full's time, at {lo['peak_mib'] / f['peak_mib']:.2f}x its peak memory "
                  f"({rows[0]['memory_method']}; on CPU this is the whole process, weights and data included)."]
    Path(args.out).write_text("\n".join(lines) + "\n\n```json\n" + json.dumps(head, indent=1) + "\n```\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
