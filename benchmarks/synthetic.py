"""Synthetic queries on the demo: 50 labeled pairs alone, 50 + synthetic queries, 200 labeled pairs.

The packaged MiniLM on the Swedish construction FAQ (the demo config, default full strategy,
3 epochs): the same held-out queries searched against all 503 answers for every model, so the
gains are paired and compared with paired bootstrap intervals. Synthetic queries come from the
packaged SmolLM2-135M-Instruct for training documents the 50 labeled pairs do not cover; a
second pass measures the cache (generation seconds ~0).

    python benchmarks/synthetic.py [--lang sv] [--queries 50] [--phase all|generate]

``--phase generate`` only fills the generation cache (run it first on a slow machine); the full
run then reports the seconds the generation cost when it was made.
Writes benchmarks/results/synthetic.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).parent / "results"
METRIC = "mrr@20"


EXTRA: list[str] = []  # --set overrides shared by every run (e.g. train.epochs=1 on a slow machine)


def config(lang: str, labeled: int, queries: int, **extra):
    from tunewise.demos.base import demo_config

    overrides = [f"data.max_train={labeled}", f"synthetic.queries={queries}", *EXTRA, *[f"{k}={v}" for k, v in extra.items()]]
    return demo_config(tempfile.mkdtemp(prefix="tw-synth-"), lang=lang, overrides=overrides)


def train_and_evaluate(task, cfg, data):
    model = task.load_model(cfg, "cpu")
    with tempfile.TemporaryDirectory() as work:
        stats = task.train(model, data, cfg, workdir=Path(work))
    return stats, task.evaluate(model, data, cfg)


def _saved(result) -> dict:
    return {"metrics": result.metrics, "items": result.items}


def _loaded(saved: dict):
    from tunewise.evaluate.retrieval import EvalResult

    return EvalResult(metrics=saved["metrics"], seconds=0.0, items=saved["items"])


def run(task, cfg) -> dict:
    data = task.prepare_data(cfg)
    stats, after = train_and_evaluate(task, cfg, data)
    out = {"after": _saved(after), "train_seconds": stats.seconds, "examples": stats.examples,
           "levers": stats.details.get("levers", {})}
    print(cfg.data.max_train, after.metrics[METRIC], f"{stats.seconds:.0f} s", out["levers"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lang", default="sv")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--phase", default="all", choices=["all", "generate", "labeled", "synthetic"],
                        help="generate: fill the generation cache; labeled: the two labeled-only runs (to --store); "
                             "all: everything, reusing --store when it exists")
    parser.add_argument("--store", default=None, help="JSON of the labeled-only runs (before, 50, 200)")
    parser.add_argument("--suffix", default="")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    parser.add_argument("--only", default=None, choices=["50", "200"], help="--phase labeled: just this run (parallel processes)")
    args = parser.parse_args()
    EXTRA.extend(args.overrides)

    from tunewise.data.synthetic import KEPT, synthesize, synthetic_rows
    from tunewise.evaluate.uncertainty import gain_intervals, paired_interval
    from tunewise.tasks.embedding import EmbeddingTask

    task = EmbeddingTask()
    cfg_syn = config(args.lang, 50, args.queries)
    data50 = task.prepare_data(cfg_syn)
    if args.phase == "generate":
        t = time.perf_counter()
        items, report = synthesize(data50.train, data50, cfg_syn)
        print(f"generated {len(items)} for {report['documents']} documents in {time.perf_counter() - t:.1f} s", flush=True)
        return
    load = os.getloadavg()
    store = Path(args.store.split(",")[0]) if args.store else None
    if args.only:  # one labeled run into --store (the combining run merges the stores of both)
        done = {"before": _saved(task.evaluate(task.load_model(cfg_syn, "cpu"), data50, cfg_syn)), "load_average": load} \
            if args.only == "50" else {}
        done[f"{args.only} labeled"] = run(task, config(args.lang, int(args.only), 0))
        store.write_text(json.dumps(done), encoding="utf-8")
        return
    if store is not None and all(Path(part).is_file() for part in args.store.split(",")):
        labeled = {}
        for part in args.store.split(","):
            labeled.update(json.loads(Path(part).read_text(encoding="utf-8")))
    elif args.phase != "synthetic":
        before_model = task.load_model(cfg_syn, "cpu")
        labeled = {"before": _saved(task.evaluate(before_model, data50, cfg_syn)), "load_average": load}
        del before_model
        labeled["50 labeled"] = run(task, config(args.lang, 50, 0))
        labeled["200 labeled"] = run(task, config(args.lang, 200, 0))
        if store is not None:
            store.write_text(json.dumps(labeled), encoding="utf-8")
    if args.phase == "labeled":
        return
    syn_name = f"50 labeled + synthetic (<= {args.queries})"
    syn_store = Path(f"/tmp/tw-synthetic-{args.lang}-{args.queries}.json")
    if args.phase == "synthetic" or not syn_store.is_file():
        before_model = task.load_model(cfg_syn, "cpu")
        # (b) generation, twice: the second pass is answered by the cache
        t = time.perf_counter()
        items, gen_report = synthesize(data50.train, data50, cfg_syn, before_model)
        first_wall = time.perf_counter() - t
        t = time.perf_counter()
        _, cached_report = synthetic_rows(data50.train, data50, cfg_syn, before_model)
        second_wall = time.perf_counter() - t
        del before_model
        syn_run = run(task, cfg_syn)
        syn_store.write_text(json.dumps({"items": [vars(i) for i in items], "gen_report": gen_report, "first_wall": first_wall,
                                         "second_wall": second_wall, "cached_report": cached_report, "run": syn_run},
                                        ensure_ascii=False, default=str), encoding="utf-8")
        if args.phase == "synthetic":
            return
    saved = json.loads(syn_store.read_text(encoding="utf-8"))
    from tunewise.data.synthetic import SyntheticQuery

    items = [SyntheticQuery(**i) for i in saved["items"]]
    gen_report, first_wall, second_wall = saved["gen_report"], saved["first_wall"], saved["second_wall"]
    cached_report = saved["cached_report"]
    before = _loaded(labeled["before"])
    runs = {"50 labeled": labeled["50 labeled"], syn_name: saved["run"], "200 labeled": labeled["200 labeled"]}

    names = list(runs)
    rows = []
    for name in names:
        r = runs[name]
        gain = gain_intervals(before, _loaded(r["after"])).get(METRIC, {})
        rows.append({"run": name, "training_pairs": r["examples"], METRIC: r["after"]["metrics"][METRIC], "gain": gain,
                     "train_seconds": round(r["train_seconds"], 1), "levers": r["levers"]})
    small, syn, big = (runs[n]["after"]["items"][METRIC] for n in names)
    vs_small = paired_interval(small, syn)
    vs_big = paired_interval(big, syn)
    g = {row["run"]: row["gain"].get("relative") for row in rows}
    share = (g[syn_name] / g["200 labeled"]) if g["200 labeled"] else None
    share_50 = (g["50 labeled"] / g["200 labeled"]) if g["200 labeled"] else None
    kept = [i for i in items if i.status == KEPT]
    dropped = [i for i in items if i.status != KEPT]
    out = {
        "lang": args.lang, "overrides": EXTRA, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "load_average": labeled.get("load_average", load), "before": before.metrics[METRIC], "eval_queries": len(data50.eval.queries),
        "runs": rows, "synthetic_vs_50": vs_small, "synthetic_vs_200": vs_big, "share_of_200_gain": share, "share_50": share_50,
        "generation": {**gen_report, "first_wall_seconds": round(first_wall, 1), "second_wall_seconds": round(second_wall, 2),
                       "second_report": cached_report},
        "samples_kept": [(i.query, i.document[:120]) for i in kept[:10]],
        "samples_dropped": [(i.query, i.status, i.document[:120]) for i in dropped[:10]],
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"synthetic{args.suffix}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    (RESULTS / f"{stem}.md").write_text(markdown(out, names), encoding="utf-8")
    print((RESULTS / f"{stem}.md").read_text(encoding="utf-8"))


def _ci(interval: dict) -> str:
    if not interval or interval.get("rel_low") is None:
        return "n/a"
    return f"{interval['relative'] * 100:+.1f}% [{interval['rel_low'] * 100:+.1f}, {interval['rel_high'] * 100:+.1f}]"


def markdown(out: dict, names: list[str]) -> str:
    gen = out["generation"]
    setting = ", ".join(out.get("overrides") or []) or "the demo's 3 epochs"
    lines = [f"# Synthetic queries on the demo ({out['lang']} FAQ, MiniLM, full strategy; {setting})", "",
             f"Machine: {out['machine']}; load average {', '.join(f'{x:.1f}' for x in out['load_average'])} at the start "
             "(many processes shared the 2 cores: absolute seconds are inflated, compare ratios within this run).", "",
             f"Pre-trained {METRIC}: {out['before']:.4f} on {out['eval_queries']} held-out queries x 503 answers.", "",
             f"| run | training pairs | {METRIC} | gain vs pre-trained (95% paired bootstrap) | training s |",
             "| --- | ---: | ---: | --- | ---: |"]
    for r in out["runs"]:
        lines.append(f"| {r['run']} | {r['training_pairs']} | {r[METRIC]:.4f} | {_ci(r['gain'])} | {r['train_seconds']} |")
    share = out["share_of_200_gain"]
    lines += ["", f"50 + synthetic vs 50 labeled: {out['synthetic_vs_50']['difference']:+.4f} {METRIC} "
              f"[{out['synthetic_vs_50']['abs_low']:+.4f}, {out['synthetic_vs_50']['abs_high']:+.4f}], "
              f"p = {out['synthetic_vs_50']['p_value']:.3f}.",
              f"50 + synthetic vs 200 labeled: {out['synthetic_vs_200']['difference']:+.4f} "
              f"[{out['synthetic_vs_200']['abs_low']:+.4f}, {out['synthetic_vs_200']['abs_high']:+.4f}], "
              f"p = {out['synthetic_vs_200']['p_value']:.3f}.",
              f"Share of the 200-labeled relative gain reached: {share * 100:.0f}% "
              f"(50 labeled alone: {out['share_50'] * 100:.0f}%)." if share is not None else "", "",
              "## Generation", "",
              f"Generator {gen.get('generator')}, language asked: {gen.get('language')}; {gen.get('documents')} documents, "
              f"{gen['second_report'].get('generated')} queries generated, {gen['second_report'].get('kept')} kept, filtered: "
              f"{json.dumps(gen['second_report'].get('filtered', {}), ensure_ascii=False)}, used {gen['second_report'].get('used')}.",
              f"Generation cost (as recorded in the cache when it was made): {gen.get('synthetic_seconds')} s; this run's first "
              f"pass took {gen['first_wall_seconds']} s wall (cached: {gen.get('synthetic_cached')}), the second pass "
              f"{gen['second_wall_seconds']} s wall, reporting synthetic_seconds {gen['second_report'].get('synthetic_seconds')} "
              f"and synthetic_cached {gen['second_report'].get('synthetic_cached')}.", "",
              "## Samples", "", "Kept (query <- document start):", ""]
    lines += [f"- `{q}` <- {d}" for q, d in out["samples_kept"]]
    lines += ["", "Dropped (query, reason <- document start):", ""]
    lines += [f"- `{q}` ({why}) <- {d}" for q, why, d in out["samples_dropped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
