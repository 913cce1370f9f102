"""k-fold with ``head`` costs little more than one ``head`` run: the feature cache serves every fold.

Runs, in one process and each from an empty feature cache: one ``head`` fit of the packaged
demo (MiniLM on the Swedish FAQ, 400 training pairs, 103 held out), then the same with
``eval.folds=5`` (every one of the 503 questions held out once), then the single run again
(so that neither side gets a warmer machine). Writes ``results/folds_head.md`` with the wall
times, their ratio and the 5-fold table.

    python benchmarks/folds_head.py [--lang sv] [--folds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="sv")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TUNEWISE_CACHE", tempfile.mkdtemp(prefix="tunewise-folds-bench-"))
    from rich.console import Console

    from tunewise.demos import demo_config
    from tunewise.files import cache_root
    from tunewise.folds import markdown
    from tunewise.run import fit

    console = Console(stderr=True)
    work = Path(tempfile.mkdtemp(prefix="folds-bench-"))

    def timed(name: str, overrides: list[str]) -> tuple[float, dict]:
        shutil.rmtree(cache_root() / "features", ignore_errors=True)  # every run starts from an empty feature cache
        cfg = demo_config(str(work / name), lang=args.lang, overrides=["strategy=head", *overrides])
        start = time.perf_counter()
        result = fit(cfg, console=console)
        return time.perf_counter() - start, result.metrics

    single_1, one = timed("single-1", [])
    folds_s, folded = timed("folds", [f"eval.folds={args.folds}"])
    single_2, _ = timed("single-2", [])
    single = (single_1 + single_2) / 2
    p = one["primary_metric"]
    lines = [
        f"# k-fold with `head`: {args.folds} folds against one run",
        "",
        f"`python benchmarks/folds_head.py --lang {args.lang} --folds {args.folds}`: the packaged demo (all-MiniLM-L6-v2, "
        f"construction FAQ in {args.lang}), `strategy=head`, each run from an empty feature cache, one process; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (times on a busy machine are slower, "
        "the ratio is side by side).",
        "",
        "| run | wall seconds | held-out queries | " + f"{p} before | {p} after |",
        "|---|---:|---:|---:|---:|",
        f"| one head run (mean of two) | {single:.1f} ({single_1:.1f}, {single_2:.1f}) | {one['data']['eval_queries']} | "
        f"{one['before'][p]:.4f} | {one['after'][p]:.4f} |",
        f"| {args.folds}-fold head | {folds_s:.1f} | {folded['uncertainty'][p]['n']} (all, once each) | "
        f"{folded['before'][p]:.4f} (mean) | {folded['after'][p]:.4f} (mean) |",
        "",
        f"Ratio: {args.folds}-fold / one run = **{folds_s / single:.2f}x**.",
        "",
        "## The fold report",
        "",
        markdown(folded).split("\n", 2)[2],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "folds_head.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
