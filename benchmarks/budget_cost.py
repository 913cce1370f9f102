"""What a budget sweep costs against one run, before and after the cheaper sweep (issue 17 item 3).

One process, run side by side:

* ``demo``: one ``tunewise demo`` (``run_demo``), with a time breakdown (model load, training,
  evaluation);
* ``old``: ``tunewise demo --budget`` with the old sweep (3 seeds at every size, a separate
  4-epoch time run, no interim reports);
* ``new``: ``tunewise demo --budget`` as shipped (one seed at the full size, the time curve
  from that run, a report after every point), with the same breakdown plus report seconds;
* ``adaptive``: per dataset, the demo's sweep in full and with ``adaptive=True``: runs,
  seconds, and the recommendation (knee and recommended size) side by side.

Usage::

    python benchmarks/budget_cost.py --strategy full --parts demo,old,new
    python benchmarks/budget_cost.py --strategy head --parts adaptive --datasets classification,image-classification,embedding

Writes ``benchmarks/results/budget_cost.md`` and ``.json`` (``--tag`` keeps runs apart).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OLD_SWEEP = {"epochs": 4.0, "largest_seeds": None, "time_from_largest": False, "interim_reports": False}


class Timer:
    """Seconds spent in a few library functions (patched on their modules while it is active)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1

        self._undo.append((owner, name, fn))
        setattr(owner, name, timed)

    def __enter__(self) -> Timer:
        import tunewise.budget.results as results
        import tunewise.run as run
        from tunewise.tasks import TASKS

        for name in TASKS.names():
            cls = TASKS.get(name)
            for method, key in (("load_model", "model load"), ("evaluate", "evaluation"), ("prepare_data", "data")):
                if method in vars(cls):
                    self.wrap(cls, method, key)
        self.wrap(run, "train_with_strategy", "training")
        self.wrap(results, "build_result", "report (all)")
        self.wrap(results, "forecast", "report: forecast")
        self.wrap(results, "validate_forecast", "report: forecast check")
        import tunewise.report as report

        self.wrap(report, "write_report", "report: html + plots")
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)

    def table(self) -> dict[str, list]:
        return {k: [round(v, 1), self.calls[k]] for k, v in sorted(self.seconds.items())}


def _rec(result) -> dict[str, Any]:
    rec = result.recommendation
    knee = result.data_summary[rec.data_knee].size if rec.data_knee is not None else None
    return {"items": rec.items, "data_knee_items": knee, "epochs": rec.epochs, "text": rec.text,
            "runs": result.cost.get("runs"), "train_s": result.cost.get("train_seconds"),
            "eval_s": result.cost.get("eval_seconds"), "full_run_multiple": result.cost.get("full_run_multiple"),
            "adaptive": result.adaptive}


def run_part(part: str, name: str, overrides: list[str], root: Path, sweep: dict | None = None) -> dict[str, Any]:
    from rich.console import Console

    from tunewise.demos import run_demo

    quiet = Console(quiet=True)
    out = root / f"{name}-{part}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with Timer() as timer:
        if part == "demo":
            run_demo(name, output_dir=str(out), overrides=overrides, console=quiet)
            row: dict[str, Any] = {}
        else:
            result = run_demo(name, budget=True, output_dir=str(out), overrides=overrides, console=quiet,
                              sweep={"fresh": True, "console": quiet, **(sweep or {})})
            row = _rec(result)
    row.update(wall_s=round(time.perf_counter() - start, 1), breakdown=timer.table())
    print(part, name, json.dumps(row)[:400], flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default=None, help="strategy.name override (default: the demo's)")
    ap.add_argument("--parts", default="demo,old,new")
    ap.add_argument("--datasets", default="embedding", help="demos for the adaptive comparison")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    args = ap.parse_args()
    import torch

    overrides = [f"strategy.name={args.strategy}"] if args.strategy else []
    parts = args.parts.split(",")
    load = os.getloadavg()
    rows: dict[str, Any] = {"machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads "
                            f"{torch.get_num_threads()}", "load_at_start": [round(x, 1) for x in load],
                            "strategy": args.strategy or "demo default", "runs": {}}
    root = Path(tempfile.mkdtemp(prefix="budget-cost-"))
    out = Path(__file__).parent / "results" / f"budget_cost{args.tag}.json"

    def save() -> None:  # after every part: a long run stopped part-way keeps what it measured
        rows["load_at_end"] = [round(x, 1) for x in os.getloadavg()]
        out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(markdown(rows, " ".join(sys.argv[1:])), encoding="utf-8")

    for part in parts:
        if part == "adaptive":
            for name in args.datasets.split(","):
                full = run_part("full", name, overrides, root)
                ada = run_part("adaptive", name, overrides, root, {"adaptive": True})
                rows["runs"][f"adaptive:{name}"] = {"full": full, "adaptive": ada}
                save()
        else:
            rows["runs"][part] = run_part(part, "embedding", overrides, root, OLD_SWEEP if part == "old" else None)
            save()
    print(f"wrote {out} and {out.with_suffix('.md')}")


def markdown(rows: dict[str, Any], argv: str) -> str:
    """The results file: wall times side by side, the ratio, the recommendations, the adaptive comparison."""
    runs = rows["runs"]
    lines = [f"# Budget sweep cost vs one run\n\n`python benchmarks/budget_cost.py {argv}`\n",
             f"{rows['machine']}; strategy {rows['strategy']}; load average at start {rows['load_at_start']}, "
             f"at end {rows['load_at_end']} (a shared 2-core machine: absolute seconds are inflated, "
             "compare within this run).\n"]
    if "demo" in runs:
        demo = runs["demo"]["wall_s"]
        lines += ["| run | wall s | x one `tunewise demo` | runs | data knee | items | epochs | cost multiple (report) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|", f"| tunewise demo | {demo} | 1.00 | 1 | | | | |"]
        for part in ("old", "new"):
            if part in runs:
                r = runs[part]
                lines.append(f"| demo --budget ({part}) | {r['wall_s']} | **{r['wall_s'] / demo:.2f}** | {r['runs']} | "
                             f"{r['data_knee_items']} | {r['items']} | {r['epochs']} | {r['full_run_multiple']} |")
        lines += ["", "Where the time went (seconds, calls):", "",
                  "| run | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
        for part in ("demo", "old", "new"):
            if part in runs:
                b = runs[part]["breakdown"]
                lines.append(f"| {part} | " + " | ".join(f"{b[k][0]} ({b[k][1]})" if k in b else "–" for k in KEYS) + " |")
        lines.append("")
    ada = {k.split(":", 1)[1]: v for k, v in runs.items() if k.startswith("adaptive:")}
    if ada:
        lines += ["Adaptive (`adaptive=True`) vs the full sweep, same settings:", "",
                  "| dataset | full: runs / wall s | adaptive: runs / wall s | saved | full: knee, items | "
                  "adaptive: knee, items | same | adaptive did |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for name, pair in ada.items():
            f, a = pair["full"], pair["adaptive"]
            same = (f["data_knee_items"], f["items"]) == (a["data_knee_items"], a["items"])
            did = a["adaptive"] or {}
            what = (f"stopped: {did.get('reason')}; skipped {len(did.get('skipped') or [])}" if did.get("stopped")
                    else f"ran all ({did.get('reason')})")
            lines.append(f"| {name} | {f['runs']} / {f['wall_s']} | {a['runs']} / {a['wall_s']} | "
                         f"{1 - a['wall_s'] / f['wall_s']:.0%} | {f['data_knee_items']}, {f['items']} | "
                         f"{a['data_knee_items']}, {a['items']} | {'yes' if same else '**no**'} | {what} |")
        lines.append("")
    return "\n".join(lines) + "\n"


KEYS = ("model load", "data", "training", "evaluation", "report (all)", "report: forecast", "report: forecast check",
        "report: html + plots")


if __name__ == "__main__":
    main()
