"""What a budget sweep costs against one run, before and after the cheaper sweep (issue 17 item 3).

One process, run side by side:

* ``demo``: one ``tunewise demo`` (``run_demo``), with a time breakdown (model load, training,
  evaluation);
* ``old``: ``tunewise demo --budget`` with the sweep as of 6cd8e2e (3 seeds at every size, a
  separate 4-epoch time run at the largest size, every data point checkpointed every epoch);
* ``new``: ``tunewise demo --budget`` as shipped (2 seeds, one at the full size, the time curve
  at the recommended size, short points not checkpointed), with the same breakdown;
* ``adaptive``: per dataset, the demo's sweep in full and with ``adaptive=True``: runs,
  seconds, and the recommendation (knee and recommended size) side by side;
* ``cli``: the two commands as a user runs them, in fresh processes, alternating order;
* ``replay``: per dataset, the demo's sweep in full (3 seeds at every size) and the adaptive rule
  replayed on its points (:func:`replay_adaptive`): the same comparison for one sweep's cost.

Usage::

    python benchmarks/budget_cost.py --strategy full --parts demo,old,new
    python benchmarks/budget_cost.py --strategy head --parts adaptive --datasets classification,image-classification,embedding
    python benchmarks/budget_cost.py --parts replay --datasets embedding,classification --tag -replay
    python benchmarks/budget_cost.py --parts cli --rounds 2 --tag -cli

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

# The demo's sweep before issue 17's last changes (6cd8e2e): 3 seeds at every size, the time curve at
# the largest size, every data point checkpointed after every epoch.
OLD_SWEEP = {"seeds": 3, "epochs": 4.0, "largest_seeds": None, "time_size": "largest", "time_from_largest": False}


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


def replay_adaptive(store_dir: Path, drop: float = 0.70, stop_width: float | None = None) -> dict[str, Any]:
    """The adaptive rule replayed on a finished full sweep's store.

    A point is one deterministic run of (size, seed), so an adaptive sweep that stops after seed s
    holds exactly the full sweep's points of seeds 0..s: the rule (knee confirmed with any one
    seed left out; with ``stop_width``, also the forecast interval at the largest size, from the
    interim report's forecast of the points so far) is applied at each seed boundary, and the
    recommended size of the points kept is compared with the full sweep's.
    """
    from tunewise.budget.adaptive import adaptive_stop
    from tunewise.budget.advice import recommend
    from tunewise.budget.forecast import forecast
    from tunewise.budget.results import INTERIM_BOOT
    from tunewise.budget.roi import summarize_points
    from tunewise.budget.store import ResultStore

    path = store_dir / "results.jsonl"
    header = json.loads(path.open(encoding="utf-8").readline())
    data = [p for p in ResultStore(path, header["fingerprint"]).points() if p.kind == "data"]
    sizes = sorted({p.size for p in data})
    seeds = sorted({p.seed for p in data})
    kept, decision = data, None
    for last in seeds[:-1]:
        prefix = [p for p in data if p.seed <= last]
        fc = forecast(prefix, n_boot=INTERIM_BOOT) if stop_width is not None else None
        decision = adaptive_stop(prefix, sizes, drop=drop, stop_width=stop_width, forecast=fc)
        if decision.stop:
            kept = prefix
            break

    def answer(points):
        rec = recommend(summarize_points(points, "data"), None, drop=drop)
        return rec.items, rec.data_knee

    full, ada = answer(data), answer(kept)
    seconds = lambda pts: round(sum(p.train_seconds + p.eval_seconds for p in pts), 1)  # noqa: E731
    return {"store": str(store_dir), "stop_width": stop_width, "sizes": sizes, "seeds": len(seeds), "full_runs": len(data),
            "full_s": seconds(data), "full_items": full[0], "adaptive_runs": len(kept), "adaptive_s": seconds(kept),
            "adaptive_items": ada[0], "same": full == ada,
            "stopped": bool(decision and decision.stop), "reason": decision.reason if decision else "one seed"}


def cli_rounds(rounds: int, root: Path) -> dict[str, Any]:
    """``tunewise demo`` and ``tunewise demo --budget`` as a user runs them (fresh processes, start-up
    included), alternating which goes first; wall seconds per round and the ratio."""
    import subprocess

    out: dict[str, Any] = {"rounds": []}
    for r in range(rounds):
        order = ("demo", "budget") if r % 2 == 0 else ("budget", "demo")
        row: dict[str, Any] = {"order": list(order)}
        for what in order:
            folder = root / f"cli-{what}-{r}"
            cmd = ["tunewise", "demo", "-o", str(folder), *(["--budget"] if what == "budget" else [])]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            row[what] = round(time.perf_counter() - start, 1)
            if what == "budget":
                rec = json.loads((folder / "summary.json").read_text())["recommendation"]
                row.update(recommendation=rec["text"], items=rec.get("items"), epochs=rec.get("epochs"))
            print(f"cli round {r} {what}: {row[what]} s", flush=True)
        row["ratio"] = round(row["budget"] / row["demo"], 2)
        out["rounds"].append(row)
    return out


def run_part(part: str, name: str, overrides: list[str], root: Path, sweep: dict | None = None) -> dict[str, Any]:
    from rich.console import Console

    from tunewise.demos import run_demo

    quiet = Console(quiet=True)
    out = root / f"{name}-{part}"
    shutil.rmtree(out, ignore_errors=True)
    import tunewise.budget.sweep as sweep_module

    threshold = sweep_module.POINT_CHECKPOINT_SECONDS
    if part == "old":  # every data point checkpointed, as before
        sweep_module.POINT_CHECKPOINT_SECONDS = 0.0
    start = time.perf_counter()
    with Timer() as timer:
        if part == "demo":
            run_demo(name, output_dir=str(out), overrides=overrides, console=quiet)
            row: dict[str, Any] = {}
        else:
            result = run_demo(name, budget=True, output_dir=str(out), overrides=overrides, console=quiet,
                              sweep={"fresh": True, "console": quiet, **(sweep or {})})
            row = _rec(result)
    sweep_module.POINT_CHECKPOINT_SECONDS = threshold
    row.update(wall_s=round(time.perf_counter() - start, 1), breakdown=timer.table())
    print(part, name, json.dumps(row)[:400], flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default=None, help="strategy.name override (default: the demo's)")
    ap.add_argument("--parts", default="demo,old,new")
    ap.add_argument("--datasets", default="embedding", help="demos for the adaptive comparison")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--rounds", type=int, default=2, help="with --parts cli: rounds of demo and demo --budget")
    ap.add_argument("--stop-width", type=float, default=None, help="with --parts replay: also replay --stop-width")
    ap.add_argument("--stores", default="", help="with --parts replay: NAME=DIR,... finished full sweeps to replay "
                    "instead of running them (e.g. the old part's store)")
    args = ap.parse_args()
    import sentence_transformers  # noqa: F401  imported before any part: no part pays the start-up alone
    import torch

    import tunewise.budget.sweep  # noqa: F401
    import tunewise.run  # noqa: F401

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
        if part == "cli":
            rows["runs"]["cli"] = cli_rounds(args.rounds, root)
            save()
        elif part == "replay":  # the adaptive rule on the full sweeps of --datasets, run now (default sweep, 3 seeds)
            stores = dict(item.split("=", 1) for item in args.stores.split(",") if item)
            widths = [None] + ([args.stop_width] if args.stop_width else [])
            for name in [n for n in args.datasets.split(",") if n and n not in stores]:
                run_part("full", name, overrides, root, {"seeds": 3, "largest_seeds": None})
                stores[f"{name} ({args.strategy or 'demo strategy'})"] = str(root / f"{name}-full")
            for name, folder in stores.items():
                for width in widths:
                    key = f"replay:{name}" + (f" --stop-width {width:g}" if width else "")
                    rows["runs"][key] = replay_adaptive(Path(folder), stop_width=width)
                    save()
        elif part == "adaptive":
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
        lines += ["", "Recommendations, word for word:", ""]
        lines += [f"* {part}: \"{runs[part]['text']}\"" for part in ("old", "new") if part in runs]
        lines += ["", "\"cost multiple (report)\" is what the sweep's own report says: its training + evaluation "
                  "seconds over one run of its largest point (400 pairs at the sweep's 2 epochs), without model "
                  "loading, start-up and reports; \"x one `tunewise demo`\" is wall time against the demo's "
                  "3-epoch run, measured here.", ""]
        lines += ["Where the time went (seconds, calls; a time curve's evaluations run inside its training, so "
                  "they are in both columns):", "",
                  "| run | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
        for part in ("demo", "old", "new"):
            if part in runs:
                b = runs[part]["breakdown"]
                lines.append(f"| {part} | " + " | ".join(f"{b[k][0]} ({b[k][1]})" if k in b else "–" for k in KEYS) + " |")
        lines.append("")
    if "cli" in runs:
        rounds = runs["cli"]["rounds"]
        lines += ["As a user runs them (`tunewise demo` and `tunewise demo --budget`, fresh processes with their start-up, "
                  "the order alternating per round):", "", "| round | order | demo s | demo --budget s | ratio |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {i} | {' then '.join(r['order'])} | {r['demo']} | {r['budget']} | **{r['ratio']:.2f}** |"
                  for i, r in enumerate(rounds)]
        total = sum(r["budget"] for r in rounds) / sum(r["demo"] for r in rounds)
        answers = {(r.get("items"), r.get("epochs")) for r in rounds}
        lines += ["", f"Over the rounds: {total:.2f}x. Advised items and epochs "
                  + ("the same in every round" if len(answers) == 1 else "DIFFER between rounds")
                  + f" ({', '.join(f'{i} items, {e:g} epochs' for i, e in sorted(answers))}); the seconds in the text "
                  "are each run's own measurement:", ""]
        lines += [f"* round {i}: \"{r['recommendation'][:110]}...\"" for i, r in enumerate(rounds)]
        lines.append("")
    replays = {k.split(":", 1)[1]: v for k, v in runs.items() if k.startswith("replay:")}
    if replays:
        lines += ["The adaptive rule replayed on full sweeps (3 seeds at every size; the knee rule alone, then with "
                  "--stop-width, read from the interim report's forecast of the points so far; a stopped adaptive "
                  "sweep holds exactly the full sweep's points of its first seeds). The strategy is in the first "
                  "column; items \"None\": fine-tuning beat the pre-trained baseline at no size, so no size is "
                  "advised.", "",
                  "| dataset (demo, strategy) | sizes | full: runs / train+eval s / items | adaptive: runs / s / items | "
                  "same items | adaptive did |", "|---|---|---:|---:|---|---|"]
        for name, r in replays.items():
            did = f"stopped after {r['adaptive_runs'] // len(r['sizes'])} seeds: {r['reason']}" if r["stopped"] else \
                f"ran all ({r['reason']})"
            lines.append(f"| {name} | {r['sizes']} | {r['full_runs']} / {r['full_s']} / {r['full_items']} | "
                         f"{r['adaptive_runs']} / {r['adaptive_s']} / {r['adaptive_items']} | "
                         f"{'yes' if r['same'] else '**no**'} | {did} |")
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
