"""Few-shot classification: strategy ``contrastive`` (the SetFit recipe) against today's default
(``full`` fine-tuning from the probe head, the demo's 5 epochs at 1e-4) and the frozen probe
(logistic regression on frozen head inputs: the classification baseline, what ``head`` starts from).

The packaged MiniLM on the packaged Swedish construction FAQ, offline:

- ``faq-sv-39``: question -> one of 39 categories (the classification demo);
- ``faq-sv-2``: the same questions, the categories merged into two super-classes: rules, money
  and paperwork against the building work itself (a two-class corpus built from packaged text).

Per data set one held-out evaluation set (103 questions, stratified, seed 0) serves every
strategy, size and seed; training subsets are the budget planner's nested seeded draws
(:func:`tunewise.budget.grid.nested_subsets`), the same items for every strategy. Accuracy
intervals are scipy BCa bootstraps over evaluation items of the seed-averaged per-item score
(:func:`tunewise.evaluate.uncertainty.mean_interval`); the contrastive-minus-full gain is a paired
bootstrap (:func:`tunewise.evaluate.uncertainty.paired_interval`).

Run: ``python benchmarks/fewshot.py [--sizes 25 50 100] [--seeds 2] [--sets faq-sv-39 faq-sv-2]``;
writes benchmarks/results/fewshot.md and .json (each finished point is kept: a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"
EVAL_SIZE = 103  # 503 questions: 400 left for training, the largest size
STRATEGIES = {  # label -> strategy mapping; learning rates as a user gets them
    "full": ({"name": "full"}, 1e-4),  # the classification demo's settings
    "contrastive": ({"name": "contrastive"}, None),  # its own default, 2e-5, num_iterations 20
}
# rules, money and paperwork (the rest: the building work itself)
PAPERWORK = {"rot-avdrag", "verifiera-byggfirma", "kontrakt", "dolda-fel", "bbr-pbl", "bygglov", "rut-avdrag", "kostnader",
             "f-skatt", "dispute", "omvand-moms", "personalliggare", "marklov-rivningslov", "strandskydd",
             "forsakring-ansvar", "reklamation-process", "garantier", "tomtgrans-servitut"}


def data_file(name: str, folder: Path) -> Path:
    import zaragoza_construction_faq as faq

    rows = faq.load(lang="sv")
    if name == "faq-sv-2":
        label = lambda r: "paperwork" if r["category"] in PAPERWORK else "building"  # noqa: E731
    else:
        label = lambda r: r["category"]  # noqa: E731
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": r["q"], "label": label(r)}, ensure_ascii=False) + "\n" for r in rows))
    return path


def config(path: Path, strategy: dict, lr: float | None, seed: int):
    from tunewise.run import as_config

    return as_config({"task": "classification", "seed": seed, "strategy": strategy,
                      "data": {"train": str(path), "eval_size": EVAL_SIZE},
                      "train": {"epochs": 5.0, "learning_rate": lr, "batch_size": 16}, "eval": {"examples": 0}})


def one_point(task, data, path: Path, size: int, seed: int, indices: list[int], work: Path) -> dict:
    """Probe, full and contrastive on the same subset: per-item correctness, metrics and seconds."""
    from tunewise.run import train_with_strategy
    from tunewise.strategies.base import resolve_strategy

    sub = task.subset(data, indices)
    out: dict = {}
    for label, (strategy, lr) in STRATEGIES.items():
        cfg = config(path, strategy, lr, seed)
        strat, options = resolve_strategy(cfg)
        model = strat.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
        probe = task.baseline(model, sub, cfg)  # the head full fine-tuning starts from (classify.init_head)
        if "probe" not in out:
            out["probe"] = {"metrics": probe.metrics, "items": probe.items["accuracy"], "seconds": probe.seconds}
        start = time.perf_counter()
        stats, _ = train_with_strategy(strat, options, task, model, sub, cfg, workdir=work / f"{label}-{size}-{seed}")
        seconds = time.perf_counter() - start
        result = task.evaluate(model, sub, cfg)
        out[label] = {"metrics": result.metrics, "items": result.items["accuracy"], "seconds": seconds,
                      "train_seconds": stats.seconds}
        print(f"  {label}: accuracy {result.metrics['accuracy']:.3f} macro-F1 {result.metrics['macro_f1']:.3f} "
              f"({seconds:.0f} s)", flush=True)
    return out


def summarise(points: dict, cfg) -> list[dict]:
    from tunewise.evaluate.uncertainty import mean_interval, paired_interval

    rows = []
    for dataset, sizes in points.items():
        for size, seeds in sorted(sizes.items(), key=lambda kv: int(kv[0])):
            runs = list(seeds.values())
            for label in ("probe", "full", "contrastive"):
                per_seed = [r[label] for r in runs]
                items = [statistics.fmean(col) for col in zip(*(r["items"] for r in per_seed))]
                acc = mean_interval(items, cfg)
                f1 = [r["metrics"]["macro_f1"] for r in per_seed]
                row = {"data": dataset, "size": int(size), "strategy": label, "seeds": len(runs),
                       "accuracy": acc["value"], "accuracy_low": acc["low"], "accuracy_high": acc["high"],
                       "macro_f1": statistics.fmean(f1), "macro_f1_min": min(f1), "macro_f1_max": max(f1),
                       "seconds": statistics.fmean(r["seconds"] for r in per_seed)}
                if label == "contrastive":
                    full = [statistics.fmean(col) for col in zip(*(r["full"]["items"] for r in runs))]
                    gain = paired_interval(full, items, seed=0)
                    row.update(gain_vs_full=gain["difference"], gain_low=gain["abs_low"], gain_high=gain["abs_high"],
                               p_value=gain["p_value"])
                rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        "# Few-shot classification: contrastive (SetFit recipe) vs full fine-tuning vs frozen probe",
        "",
        f"Machine: {meta['machine']}; load average at start {meta['load_start']}, at end {meta['load_end']}. The CPU "
        "is shared with other jobs, so absolute seconds are inflated; compare them within a row group only.",
        "",
        "Model: the packaged all-MiniLM-L6-v2 as `AutoModelForSequenceClassification`. Data: the packaged Swedish "
        f"construction FAQ, {EVAL_SIZE} held-out questions (the same for every row of a data set). `full`: the "
        "classification default strategy with the demo's 5 epochs at lr 1e-4, starting from the probe head. "
        "`contrastive`: `strategy: {name: contrastive}` defaults (num_iterations 20, one pass, lr 2e-5, "
        "CosineSimilarityLoss, then logistic regression). `probe`: logistic regression on frozen head inputs "
        "(the classification baseline). Accuracy: seed-averaged, with a 95 % BCa interval over evaluation items; "
        "macro-F1: mean over seeds [min, max]; gain: contrastive minus full accuracy, paired bootstrap 95 % "
        "interval over evaluation items.",
        "",
        "| data | labels | strategy | seeds | accuracy [95 % CI] | macro-F1 [min, max] | gain vs full [95 % CI] | seconds/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = (f"{r['gain_vs_full']:+.3f} [{pct(r['gain_low'])}, {pct(r['gain_high'])}]" if "gain_vs_full" in r else "")
        lines.append(f"| {r['data']} | {r['size']} | {r['strategy']} | {r['seeds']} | {r['accuracy']:.3f} "
                     f"[{pct(r['accuracy_low'])}, {pct(r['accuracy_high'])}] | {r['macro_f1']:.3f} "
                     f"[{r['macro_f1_min']:.3f}, {r['macro_f1_max']:.3f}] | {gain} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--sets", nargs="+", default=["faq-sv-39", "faq-sv-2"])
    parser.add_argument("--out", default=str(RESULTS / "fewshot"))
    parser.add_argument("--combine", nargs="+", default=None, help="merge these .json stores into --out and stop")
    parser.add_argument("--note", default="", help="a paragraph appended to the markdown (what the numbers say)")
    args = parser.parse_args()
    if args.combine:
        stores = [json.loads(Path(p).read_text()) for p in args.combine]
        points: dict = {}
        for store in stores:  # merged down to (data set, size, seed)
            for dataset, sizes in store["points"].items():
                for size, seeds in sizes.items():
                    points.setdefault(dataset, {}).setdefault(size, {}).update(seeds)
        meta = {"machine": stores[0]["meta"]["machine"], "load_start": " / ".join(s["meta"]["load_start"] for s in stores),
                "load_end": " / ".join(s["meta"].get("load_end", "?") for s in stores)}
        from tunewise.run import as_config

        rows = summarise(points, as_config({"task": "classification"}))
        Path(args.out).with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "points": points}, indent=1))
        Path(args.out).with_suffix(".md").write_text(markdown(rows, meta) + (f"\n{args.note}\n" if args.note else ""))
        return

    from tunewise.budget.grid import nested_subsets
    from tunewise.tasks import TASKS

    store = Path(args.out).with_suffix(".json")
    saved = json.loads(store.read_text()) if store.exists() else {}
    points: dict = saved.get("points", {})
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
            "load_start": saved.get("meta", {}).get("load_start") or " ".join(f"{x:.1f}" for x in os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = {}
        for dataset in args.sets:
            path = data_file(dataset, work)
            cfg = config(path, {"name": "full"}, 1e-4, 0)
            task = TASKS.get("classification")()
            prepared[dataset] = (path, task, task.prepare_data(cfg))
        for size in args.sizes:  # small sizes first: an interrupted run still has them all
            for dataset, (path, task, data) in prepared.items():
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    draws = nested_subsets(len(data.train), args.sizes, seed)
                    if str(seed) in points.get(dataset, {}).get(str(size), {}):
                        continue
                    print(f"{dataset} size {size} seed {seed}", flush=True)
                    point = one_point(task, data, path, size, seed, draws[size], work)
                    points.setdefault(dataset, {}).setdefault(str(size), {})[str(seed)] = point
                    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
                    rows = summarise(points, cfg)
                    store.write_text(json.dumps({"meta": meta, "rows": rows, "points": points}, indent=1))
                    Path(args.out).with_suffix(".md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
