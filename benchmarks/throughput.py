"""Training throughput and peak memory: ``tunewise fit`` against a plain SentenceTransformerTrainer script.

Same model (packaged all-MiniLM-L6-v2), same 400 demo pairs, same batch size, loss, sampler,
seed and hardware. Each measurement runs in a fresh subprocess; the two sides alternate
(plain, tunewise, plain, tunewise, ...) so that drift in machine load hits both; medians are
compared. Also times one evaluation pass on the demo data (103 queries against 503 answers).

    python benchmarks/throughput.py [--repeats 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

PLAIN = r'''
import json, sys, tempfile, time
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.base.sampler import BatchSamplers
from tunewise.memory.measure import PeakMemory
from tunewise.demos import demo_config
from tunewise.tasks.embedding import EmbeddingTask
from tunewise.models.defaults import packaged_minilm_path

epochs, batch = float(sys.argv[1]), int(sys.argv[2])
cfg = demo_config("/tmp/unused")
rows = EmbeddingTask().prepare_data(cfg).train  # the same 400 pairs
model = SentenceTransformer(str(packaged_minilm_path()), device="cpu")
args = SentenceTransformerTrainingArguments(
    output_dir=tempfile.mkdtemp(), num_train_epochs=epochs, per_device_train_batch_size=batch,
    learning_rate=cfg.train.learning_rate, warmup_steps=cfg.train.warmup_ratio, weight_decay=cfg.train.weight_decay,
    seed=cfg.seed, data_seed=cfg.seed, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
    report_to="none", use_cpu=True, logging_strategy="epoch")
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                     loss=MultipleNegativesRankingLoss(model))
with PeakMemory("cpu") as peak:
    t0 = time.perf_counter(); trainer.train(); seconds = time.perf_counter() - t0
print("RESULT " + json.dumps({"seconds": seconds, "pairs_per_s": len(rows) * epochs / seconds, "peak_mib": peak.peak_bytes / 2**20}))
'''

TUNEWISE = r'''
import json, sys, tempfile
import tunewise
from tunewise.demos import demo_config
epochs, batch = float(sys.argv[1]), int(sys.argv[2])
cfg = demo_config(tempfile.mkdtemp() + "/run", overrides=[f"train.epochs={epochs}", f"train.batch_size={batch}", "eval.examples=0"])
from rich.console import Console
m = tunewise.fit(cfg, console=Console(quiet=True)).metrics
print("RESULT " + json.dumps({"seconds": m["train"]["seconds"], "pairs_per_s": m["train"]["samples_per_second"],
                              "peak_mib": m["memory"]["peak_mib"], "eval_seconds": m["eval"]["seconds_after"]}))
'''


def measure(code: str, epochs: float, batch: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, str(epochs), str(batch)], capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def eval_pass_seconds() -> float:
    from tunewise.demos import demo_config
    from tunewise.evaluate.retrieval import evaluate_retrieval
    from tunewise.models.loading import load_sentence_transformer
    from tunewise.tasks.embedding import EmbeddingTask

    cfg = demo_config("/tmp/unused")
    data = EmbeddingTask().prepare_data(cfg)
    model = load_sentence_transformer(None)
    evaluate_retrieval(model, data.eval, cfg.eval, show_progress=False)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        evaluate_retrieval(model, data.eval, cfg.eval, show_progress=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"plain": [], "tunewise": []}
    for i in range(args.repeats):
        for name, code in (("plain", PLAIN), ("tunewise", TUNEWISE)) if i % 2 == 0 else (("tunewise", TUNEWISE), ("plain", PLAIN)):
            runs[name].append(measure(code, args.epochs, args.batch_size))
            print(name, runs[name][-1], file=sys.stderr)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("pairs_per_s", "peak_mib", "seconds")} for n, rs in runs.items()}
    ratio = med["tunewise"]["pairs_per_s"] / med["plain"]["pairs_per_s"]
    mem_ratio = med["tunewise"]["peak_mib"] / med["plain"]["peak_mib"]
    eval_s = eval_pass_seconds()
    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
              "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats, "runs": runs, "median": med,
              "throughput_ratio": ratio, "peak_memory_ratio": mem_ratio, "eval_pass_seconds": eval_s,
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Training throughput: tunewise fit vs a plain SentenceTransformerTrainer script", "",
        f"all-MiniLM-L6-v2 (packaged), 400 demo pairs, batch {args.batch_size}, {args.epochs:g} epoch, MNRL, no-duplicates sampler, CPU "
        f"({result['machine']}); median of {args.repeats} alternating runs, each in a fresh process. Measured {result['measured_at']}.", "",
        "| | pairs/s | train seconds | peak RSS MiB |", "|---|---:|---:|---:|",
        *(f"| {n} | {m['pairs_per_s']:.2f} | {m['seconds']:.1f} | {m['peak_mib']:.0f} |" for n, m in med.items()), "",
        f"**throughput tunewise/plain = {ratio:.3f}** (target >= 0.95); peak memory tunewise/plain = {mem_ratio:.3f}.", "",
        f"One evaluation pass on the demo data (encode 503 answers + 103 queries, exact top-k, all metrics): {eval_s:.2f} s.", "",
        "tunewise's peak includes what it holds besides training (the evaluation set, its metrics); the plain",
        "script holds only the training data.",
    ]
    (RESULTS / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
