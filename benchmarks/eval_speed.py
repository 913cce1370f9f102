"""Evaluation speed: today's encoding path against bf16, batch size, length sorting and the partial layer cache.

Scored by :func:`tunewise.evaluate.retrieval.evaluate_retrieval` with the packaged all-MiniLM-L6-v2:

* ``demo``: the Swedish FAQ demo's eval split (103 questions against all 503 answers, ~40 tokens);
* ``long``: :func:`tunewise.data.long_docs.faq_long_documents` (FAQ answers joined into ~256-token
  documents, every ``k``-th kept; every question is a query).

Full passes (metrics side by side): today (fp32, batch 64), bf16 at batch 128, and bf16 with
strategy partial's 3 frozen layers read from :class:`tunewise.models.layer_cache.FrozenLayerCache`
(the pass that fills it, as the "before" evaluation does, then the "after" pass that reads it).
Encoding-only variants on a sample (batching does not change the embeddings): batch 64/128/256
in fp32 and bf16, and "unsorted" (batches in input order, what sentence-transformers' length
sorting saves), with the peak RSS. Then one ``partial`` fit of the demo (1 epoch, same seed)
with ``strategy.cache`` false and true. Phases can run as parallel processes (``--phases``);
each merges its table into the results file.

    python benchmarks/eval_speed.py [--phases demo,long,speed,fit] [--rounds 1]
    python benchmarks/eval_speed.py --phases precision --models seed42=runs/demo/model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
METRICS = ("recall@1", "mrr@10", "ndcg@10")


class Unsorted:
    """``encode`` one batch per call, in input order: per-batch padding without length sorting."""

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, texts, batch_size=32, **kw):
        parts = [self.model.encode(texts[i:i + batch_size], batch_size=batch_size, **kw) for i in range(0, len(texts), batch_size)]
        return torch.cat(parts)


class Float32:
    """Embeddings cast to float32 (under autocast they may come out bf16) before top-k."""

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, *args, **kw):
        return self.model.encode(*args, **kw).float()


def autocast(precision: str):
    try:
        from tunewise.precision import inference_autocast

        return inference_autocast(precision, "cpu")
    except ImportError:  # before tunewise.precision existed
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def one_pass(model, data, eval_cfg, batch: int, precision: str, *, sort: bool = True, cache=None) -> dict:
    from tunewise.evaluate.retrieval import evaluate_retrieval
    from tunewise.memory.measure import PeakMemory

    cfg = dataclasses.replace(eval_cfg, batch_size=batch)
    encoder = model if sort else Unsorted(model)
    if cache is not None:
        from tunewise.strategies.partial_cache import CachedLayersView

        encoder = CachedLayersView(model, cache)
    with PeakMemory("cpu") as peak, autocast(precision):
        start = time.perf_counter()
        result = evaluate_retrieval(Float32(encoder), data, cfg, show_progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": round(peak.peak_bytes / 2**20), **{m: result.metrics[m] for m in METRICS}}


FULL = [  # full evaluation passes, metrics side by side: name, batch, precision, layer cache
    ("today: fp32, batch 64", 64, "fp32", False),
    ("bf16, batch 128", 128, "bf16", False),
    ("bf16, batch 128, partial layer cache (hit)", 128, "bf16", True),
]
SPEED = [  # encoding-only variants on a sample (metrics do not depend on batching): name, batch, precision, sorted
    ("fp32, batch 64, sorted (today)", 64, "fp32", True),
    ("fp32, batch 64, unsorted", 64, "fp32", False),
    ("fp32, batch 128", 128, "fp32", True),
    ("fp32, batch 256", 256, "fp32", True),
    ("bf16, batch 64", 64, "bf16", True),
    ("bf16, batch 128", 128, "bf16", True),
    ("bf16, batch 256", 256, "bf16", True),
]


def full_table(name: str, model, data, eval_cfg, configs=FULL) -> dict:
    """Evaluation passes over the whole set; the cached pass runs after the pass that fills it."""
    from tunewise.models.layer_cache import _SHARED, frozen_layer_cache

    rows: dict[str, dict] = {}
    for label, batch, precision, cached in configs:
        cache = None
        if cached:
            cache = frozen_layer_cache(model[0].model, 3, precision=precision, max_length=model.max_seq_length)
            fill = one_pass(model, data, eval_cfg, batch, precision, cache=cache)  # the "before" pass fills it
            rows[f"{label.replace('(hit)', '(miss: fills it)')}"] = {**fill, "disk_mb": round(cache.disk_bytes() / 2**20, 1),
                                                                  "rows": len(cache.rows)}
        rows[label] = one_pass(model, data, eval_cfg, batch, precision, cache=cache)
        print(f"[{name}] {label}: {rows[label]['seconds']:.1f} s", file=sys.stderr, flush=True)
    _SHARED.clear()
    return {"passes": rows, "corpus": len(data.corpus), "queries": len(data.queries)}


def speed_table(name: str, model, texts: list[str], rounds: int) -> dict:
    """Seconds to encode ``texts`` per variant (round-robin, best round) and the peak RSS."""
    from tunewise.memory.measure import PeakMemory

    rows: dict[str, dict] = {}
    for r in range(rounds):
        for label, batch, precision, sort in SPEED:
            encoder = model if sort else Unsorted(model)
            with PeakMemory("cpu") as peak, autocast(precision), torch.inference_mode():
                start = time.perf_counter()
                encoder.encode(texts, batch_size=batch, convert_to_tensor=True, show_progress_bar=False)
                seconds = time.perf_counter() - start
            print(f"[{name} speed round {r}] {label}: {seconds:.1f} s", file=sys.stderr, flush=True)
            if label not in rows or seconds < rows[label]["seconds"]:
                rows[label] = {"seconds": seconds, "peak_mb": round(peak.peak_bytes / 2**20)}
    return {"texts": len(texts), "rows": rows}


RATIO = [  # interleaved encoding of one sample: name, batch, precision, layer cache
    ("fp32, batch 64 (today)", 64, "fp32", False),
    ("bf16, batch 64", 64, "bf16", False),
    ("fp32, batch 64, partial layer cache (hit)", 64, "fp32", True),
    ("bf16, batch 64, partial layer cache (hit)", 64, "bf16", True),
]


def ratio_table(name: str, model, texts: list[str], rounds: int) -> dict:
    """Encoding seconds of ``texts`` per variant, the variants interleaved round by round; the
    median round is kept and each round's ratio to today's path, so that load drift on a shared
    machine hits every variant alike. The cached variants' cache is filled before round 0."""
    from statistics import median

    from tunewise.models.layer_cache import _SHARED, frozen_layer_cache
    from tunewise.strategies.partial_cache import CachedLayersView

    caches = {}
    for label, _, precision, cached in RATIO:
        if cached:
            caches[label] = frozen_layer_cache(model[0].model, 3, precision=precision, max_length=model.max_seq_length)
            with autocast(precision), torch.inference_mode():
                CachedLayersView(model, caches[label]).encode(texts, batch_size=64, show_progress_bar=False)
    seconds: dict[str, list[float]] = {label: [] for label, *_ in RATIO}
    for r in range(rounds):
        for label, batch, precision, cached in RATIO:
            encoder = CachedLayersView(model, caches[label]) if cached else model
            with autocast(precision), torch.inference_mode():
                start = time.perf_counter()
                encoder.encode(texts, batch_size=batch, convert_to_tensor=True, show_progress_bar=False)
                seconds[label].append(time.perf_counter() - start)
            print(f"[{name} ratio round {r}] {label}: {seconds[label][-1]:.1f} s", file=sys.stderr, flush=True)
    _SHARED.clear()
    today = seconds[RATIO[0][0]]
    return {"texts": len(texts), "rounds": rounds,
            "rows": {label: {"median_seconds": median(v), "seconds": v,
                             "median_speedup": median(t / x for t, x in zip(today, v))} for label, v in seconds.items()}}


def fit_partial(out: Path, cache: bool, max_train: int) -> dict:
    import tunewise
    from tunewise.demos import demo_config

    cfg = demo_config(str(out), overrides=[f"strategy={{name: partial, cache: {str(cache).lower()}}}",
                                            "train.epochs=1", "train.precision=fp32", f"data.max_train={max_train}"])
    from rich.console import Console

    start = time.perf_counter()
    result = tunewise.fit(cfg, console=Console(file=open(os.devnull, "w")))
    m = result.metrics
    return {"wall_seconds": time.perf_counter() - start, "train_seconds": m["train"]["seconds"],
            "eval_seconds_before": m["eval"]["seconds_before"], "eval_seconds_after": m["eval"]["seconds_after"],
            "examples": m["train"]["examples"], **{f"after {k}": m["after"][k] for k in METRICS}}


PRECISION_METRICS = ("recall@1", "mrr@10", "ndcg@10", "mrr@20")


def precision_table(models: dict[str, object], sets: dict[str, object], eval_cfg) -> dict:
    """The same model and set scored in fp32 and in bf16 (batch 64): metric differences, the queries
    whose per-query score moved, and the paired bootstrap interval of the bf16 - fp32 difference."""
    from tunewise.evaluate.retrieval import evaluate_retrieval
    from tunewise.evaluate.uncertainty import paired_interval

    cfg = dataclasses.replace(eval_cfg, batch_size=64, k=[1, 10, 20])
    rows = []
    for model_name, model in models.items():
        for set_name, data in sets.items():
            scored = {}
            for precision in ("fp32", "bf16"):
                with autocast(precision):
                    start = time.perf_counter()
                    scored[precision] = (evaluate_retrieval(Float32(model), data, cfg, show_progress=False),
                                         time.perf_counter() - start)
            (a, a_s), (b, b_s) = scored["fp32"], scored["bf16"]
            row = {"model": model_name, "set": set_name, "queries": len(data.queries),
                   "fp32_s": round(a_s, 2), "bf16_s": round(b_s, 2)}
            for m in PRECISION_METRICS:
                x, y = a.items[m], b.items[m]
                ci = paired_interval(x, y, resamples=2000)
                row[m] = {"fp32": a.metrics[m], "bf16": b.metrics[m], "diff": b.metrics[m] - a.metrics[m],
                          "moved": int(sum(1 for u, v in zip(x, y) if abs(u - v) > 1e-9)),
                          "low": ci["abs_low"], "high": ci["abs_high"], "p": ci["p_value"]}
            rows.append(row)
            print(f"[precision] {model_name} / {set_name}: " + ", ".join(
                f"{m} {row[m]['diff']:+.4f} ({row[m]['moved']} moved)" for m in PRECISION_METRICS), file=sys.stderr, flush=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the speed-only variants")
    parser.add_argument("--phases", default="demo,long,speed,fit", help="comma list of demo, long, speed, ratio, fit")
    parser.add_argument("--long-docs", type=int, default=96, help="documents of the long set (every k-th kept)")
    parser.add_argument("--sample", type=int, default=192, help="short texts timed per speed variant (long: a third)")
    parser.add_argument("--max-train", type=int, default=200, help="training pairs of the partial fits")
    parser.add_argument("--models", default="", help="precision phase: NAME=PATH,... fine-tuned models scored "
                        "beside the pre-trained one")
    args = parser.parse_args()
    cache_dir = Path(tempfile.mkdtemp(prefix="evalspeed-cache-"))
    os.environ["TUNEWISE_CACHE"] = str(cache_dir)  # a cold cache: the fill passes are real
    from tunewise.data.long_docs import faq_long_documents
    from tunewise.data.retrieval import IRDataset
    from tunewise.demos import demo_config
    from tunewise.models.loading import load_sentence_transformer
    from tunewise.tasks.embedding import EmbeddingTask

    cfg = demo_config("/tmp/unused")
    data = EmbeddingTask().prepare_data(cfg).eval
    model = load_sentence_transformer(None)
    tok = model.tokenizer
    long = faq_long_documents(("sv",), tokens=256, count=lambda t: len(tok(t).input_ids))
    step = max(1, len(long.corpus) // args.long_docs)
    kept = dict(list(long.corpus.items())[::step][: args.long_docs])
    long = IRDataset(long.queries, kept, long.qrels)
    path = RESULTS / "eval_speed.json"
    record: dict = json.loads(path.read_text()) if path.exists() else {}
    record.update({"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                               "threads": torch.get_num_threads()}})
    long_tokens = sorted(len(tok(t).input_ids) for t in long.corpus.values())
    record["long_set"] = {"documents": len(long.corpus), "queries": len(long.queries),
                          "median_tokens": long_tokens[len(long_tokens) // 2], "max_tokens": long_tokens[-1]}
    phases = args.phases.split(",")

    def save(key: str, value) -> None:  # phases may run in parallel processes: merge with the file
        if path.exists():
            record.update({k: v for k, v in json.loads(path.read_text()).items() if k not in record})
        record[key] = {**value, "load_average": [round(x, 1) for x in os.getloadavg()]}
        write(record)

    if "demo" in phases:
        save("demo", full_table("demo", model, data, cfg.eval))
    if "demo32" in phases:  # the fp32 cache's passes, added to the demo table
        extra = full_table("demo", model, data, cfg.eval, [("fp32, batch 64, partial layer cache (hit)", 64, "fp32", True)])
        record.update(json.loads(path.read_text()))
        record["demo"]["passes"].update(extra["passes"])
        write(record)
    if "long" in phases:
        save("long", full_table("long", model, long, cfg.eval))
    if "speed" in phases:
        short = list(data.corpus.values())[: args.sample]
        save("speed_short", speed_table("short", model, short, args.rounds))
        save("speed_long", speed_table("long", model, list(long.corpus.values())[: args.sample // 3], args.rounds))
    if "precision" in phases:
        models = {"pre-trained": model}
        for item in filter(None, args.models.split(",")):
            name, folder = item.split("=", 1)
            models[name] = load_sentence_transformer(folder)
        save("precision", precision_table(models, {"demo": data, "long": long}, cfg.eval))
    if "ratio" in phases:
        save("ratio_long", ratio_table("long", model, list(long.corpus.values())[: args.sample // 4], args.rounds))
    if "fit" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            fits = {}
            for cache in (False, True):
                fits[f"cache {cache}"] = fit_partial(Path(tmp) / f"cache-{cache}", cache, args.max_train)
                print(f"[fit] cache {cache}: {fits[f'cache {cache}']}", file=sys.stderr, flush=True)
            save("partial_fit", {"max_train": args.max_train, "runs": fits})
    shutil.rmtree(cache_dir, ignore_errors=True)


def write(record: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eval_speed.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    m = record["machine"]
    lines = ["# Evaluation speed", "",
             f"Generated by `benchmarks/eval_speed.py`. Machine: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} "
             f"({m['threads']} threads), shared with other helpers' work: the load average is noted per table "
             "(1-minute, on 2 cores); absolute seconds are inflated several times. The full passes ran one after another "
             "while the load changed (a fill pass does today's work plus storing, so its time shows the drift): read "
             "their metrics side by side, and the speed ratios from the interleaved table.", ""]
    titles = {"demo": "Demo: Swedish FAQ eval split",
              "long": "Long documents: FAQ answers joined to ~256 tokens (Swedish, `faq_long_documents`)"}
    for name in ("demo", "long"):
        if name not in record:
            continue
        t = record[name]
        base = t["passes"]["today: fp32, batch 64"]
        lines += [f"## {titles[name]}: {t['queries']} queries, {t['corpus']} documents (load {t['load_average'][0]})", "",
                  "| one evaluation pass | seconds | speed-up | peak RSS MB | " + " | ".join(METRICS) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(METRICS)]
        for label, row in t["passes"].items():
            extra = f" ({row['rows']} texts, {row['disk_mb']} MB on disk)" if "disk_mb" in row else ""
            lines.append(f"| {label}{extra} | {row['seconds']:.1f} | {base['seconds'] / row['seconds']:.2f}x | {row['peak_mb']} | "
                         + " | ".join(f"{row[k]:.4f}" for k in METRICS) + " |")
        lines.append("")
    for name, what in (("speed_short", "short FAQ answers"), ("speed_long", "long documents")):
        if name not in record:
            continue
        t = record[name]
        base = next(iter(t["rows"].values()))
        lines += [f"## Encoding only, {t['texts']} {what} (best of round-robin rounds, load {t['load_average'][0]})", "",
                  "| encoding | seconds | speed-up | peak RSS MB |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {row['seconds']:.1f} | {base['seconds'] / row['seconds']:.2f}x | {row['peak_mb']} |"
                  for label, row in t["rows"].items()]
        lines.append("")
    if "precision" in record:
        t = record["precision"]
        lines += [f"## bf16 against fp32 evaluation, per model (batch 64 both; load {t['load_average'][0]})", "",
                  "The same model and evaluation set scored twice. Per metric: bf16 - fp32, the queries whose "
                  "score moved, and the paired bootstrap 95% interval of the difference over the queries.", "",
                  "| model | set | fp32 s | bf16 s | speed-up | " + " | ".join(PRECISION_METRICS) + " |",
                  "|---|---|---:|---:|---:|" + "---|" * len(PRECISION_METRICS)]
        for r in t["rows"]:
            cells = [f"{r[m]['diff'] * 100:+.2f} pt, {r[m]['moved']}/{r['queries']} moved "
                     f"[{r[m]['low'] * 100:+.2f}, {r[m]['high'] * 100:+.2f}]" for m in PRECISION_METRICS]
            lines.append(f"| {r['model']} | {r['set']} | {r['fp32_s']:.1f} | {r['bf16_s']:.1f} | "
                         f"{r['fp32_s'] / r['bf16_s']:.2f}x | " + " | ".join(cells) + " |")
        lines.append("")
    if "ratio_long" in record:
        t = record["ratio_long"]
        lines += [f"## Encoding only, {t['texts']} long documents, variants interleaved over {t['rounds']} rounds "
                  f"(median; load {t['load_average'][0]})", "",
                  "| encoding | median s | median speed-up (per round) | every round, s |", "|---|---:|---:|---|"]
        lines += [f"| {label} | {row['median_seconds']:.1f} | {row['median_speedup']:.2f}x | "
                  + ", ".join(f"{x:.1f}" for x in row["seconds"]) + " |" for label, row in t["rows"].items()]
        lines.append("")
    if "partial_fit" in record:
        t = record["partial_fit"]
        lines += [f"## One `partial` fit of the demo ({t['max_train']} pairs, 1 epoch, fp32, seed 42, 3 of 6 layers frozen; "
                  f"load {t['load_average'][0]})", "",
                  "| strategy.cache | train s | eval before s | eval after s | wall s | " + " | ".join(f"after {k}" for k in METRICS) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(METRICS)]
        for label, row in t["runs"].items():
            lines.append(f"| {label.split()[-1].lower()} | {row['train_seconds']:.1f} | {row['eval_seconds_before']:.1f} | "
                         f"{row['eval_seconds_after']:.1f} | {row['wall_seconds']:.1f} | "
                         + " | ".join(f"{row[f'after {k}']:.4f}" for k in METRICS) + " |")
        lines += ["", "The two fits run one after the other: on a shared machine whose load changes, compare their "
                  "seconds only against the interleaved table above. With the cache the frozen layers' dropout is off "
                  "in training, so the metrics may differ within noise.", ""]
    (RESULTS / "eval_speed.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
