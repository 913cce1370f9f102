"""fp32 vs bf16 autocast per training step and per encoding pass, alternating inside ONE process.

On a machine shared with other jobs, whole runs in fresh processes (``benchmarks/precision.py``)
see the load drift between runs; here fp32 and bf16 alternate every two steps over the same
batches of the FAQ demo (packaged all-MiniLM-L6-v2, batch 16, MultipleNegativesRankingLoss,
AdamW; what the demo's full fine-tuning runs per step), so load hits both alike and the median
step time of each is compared. The encoding pass is the demo's evaluation (503 answers + 103
queries) in each precision, alternating too.

    python benchmarks/precision_steps.py [--rounds 6] [--encode-rounds 2]

Writes benchmarks/results/precision-steps.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6, help="alternations of 2 fp32 + 2 bf16 steps")
    parser.add_argument("--encode-rounds", type=int, default=2)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from tunewise.demos import demo_config
    from tunewise.flops import TokenCounter, non_embedding_params, peak_flops, training_flops
    from tunewise.models.defaults import packaged_minilm_path
    from tunewise.precision import inference_autocast
    from tunewise.tasks.embedding import EmbeddingTask

    cfg = demo_config("/tmp/unused")
    data = EmbeddingTask().prepare_data(cfg)
    rows = data.train
    keys = list(rows[0])[:2]
    model = SentenceTransformer(str(packaged_minilm_path()), device="cpu")
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate or 2e-5)
    b = cfg.train.batch_size
    batches = [[model.tokenize([r[k] for r in rows[i:i + b]]) for k in keys] for i in range(0, len(rows), b)]
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    tokens: dict[str, list[int]] = {"fp32": [], "bf16": []}
    step = 0

    def train_step(precision: str) -> None:
        nonlocal step
        features = batches[step % len(batches)]
        step += 1
        with TokenCounter(model) as counter:
            start = time.perf_counter()
            with inference_autocast(precision, "cpu"):
                loss = loss_fn(features, None)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[precision].append(time.perf_counter() - start)
        tokens[precision].append(counter.tokens)

    for precision in ("fp32", "bf16"):  # warm-up: first-call costs (oneDNN kernels) stay out
        train_step(precision)
    times = {"fp32": [], "bf16": []}
    tokens = {"fp32": [], "bf16": []}
    load_before = os.getloadavg()
    for i in range(args.rounds):
        for precision in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            for _ in range(2):
                train_step(precision)
        print(i, {k: round(statistics.median(v), 3) for k, v in times.items()}, flush=True)
    model.eval()
    texts = list(data.eval.corpus.values()) + list(data.eval.queries.values())
    encode: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.encode_rounds):
        for precision in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            start = time.perf_counter()
            with torch.inference_mode(), inference_autocast(precision, "cpu"):
                model.encode(texts, batch_size=cfg.eval.batch_size, convert_to_tensor=True, show_progress_bar=False)
            encode[precision].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    trainable, frozen = non_embedding_params([model])
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "batch_size": b,
                    "rounds": args.rounds, "load_average_before": load_before, "load_average_after": load_after,
                    "measured_at": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "sides": {}}
    for precision in ("fp32", "bf16"):
        med = statistics.median(times[precision])
        flops = training_flops(int(statistics.median(tokens[precision])), trainable, frozen)
        peak = peak_flops("cpu", precision)
        result["sides"][precision] = {
            "step_seconds": times[precision], "median_step_seconds": med, "pairs_per_second": b / med,
            "encode_seconds": encode[precision], "median_encode_seconds": statistics.median(encode[precision]),
            "model_flops_per_step": flops, "achieved_flops_per_second": flops / med, "peak_flops_per_second": peak,
            "mfu": flops / med / peak,
        }
    fp32, bf16 = result["sides"]["fp32"], result["sides"]["bf16"]
    result["train_speedup"] = fp32["median_step_seconds"] / bf16["median_step_seconds"]
    result["encode_speedup"] = fp32["median_encode_seconds"] / bf16["median_encode_seconds"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision-steps.json").write_text(json.dumps(result, indent=2))
    md = [
        "# fp32 vs bf16 autocast per step, alternating in one process (FAQ demo, MiniLM)", "",
        f"CPU: {result['machine']} (avx512_bf16), torch {torch.__version__}; batch {b}, MNRL + AdamW, demo batches; "
        f"{args.rounds} rounds of 2 fp32 + 2 bf16 steps (order alternating), medians. Measured {result['measured_at']}, "
        f"load average {load_before[0]:.1f} before and {load_after[0]:.1f} after (the machine is shared: absolute "
        "seconds are inflated, the ratios are what counts). MFU: Kaplan 6 x non-embedding params x tokens "
        "(padding included) over the best 2048^2 matmul in that precision (`tunewise.flops`).", "",
        "| precision | median step s | pairs/s | MFU | peak GFLOP/s (probe) | encode pass s (606 texts) |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {p} | {s['median_step_seconds']:.3f} | {s['pairs_per_second']:.2f} | {s['mfu']:.1%} | "
          f"{s['peak_flops_per_second'] / 1e9:.0f} | {s['median_encode_seconds']:.1f} |" for p, s in result["sides"].items()), "",
        f"**bf16 / fp32: training step {result['train_speedup']:.2f}x, evaluation encoding {result['encode_speedup']:.2f}x faster.**",
    ]
    (RESULTS / "precision-steps.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
