"""Choose the documented training defaults by measurement on the demo data.

The demo's 400 training pairs are split again: 320 train, 80 validation queries (searched
against all 503 answers). The demo's held-out test queries are never looked at, so the
defaults are not tuned on the numbers the demo reports. For each learning rate and batch
size one run trains for up to 5 epochs and is evaluated after every epoch (MRR@20 on the
validation queries), so the epoch count comes out of the same runs.

    python benchmarks/defaults.py            # writes benchmarks/results/defaults.{md,json}
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tunewise.demos import demo_config
from tunewise.evaluate.retrieval import evaluate_retrieval, make_trainer_evaluator
from tunewise.models.loading import load_sentence_transformer
from tunewise.tasks.embedding import EmbeddingTask

GRID = [(2e-5, 16), (5e-5, 16), (1e-4, 16), (5e-5, 32), (1e-4, 32)]
EPOCHS = 5
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    task = EmbeddingTask()
    base = demo_config("/tmp/unused", overrides=["data.validation_fraction=0.2", f"train.epochs={EPOCHS}"])
    base.train.early_stopping_patience = 1  # makes prepare_data carve the validation split
    data = task.prepare_data(base)
    base.train.early_stopping_patience = None
    print(f"train {len(data.train)} pairs, validation {len(data.validation.queries)} queries", file=sys.stderr)
    rows = []
    model = load_sentence_transformer(None)
    start_score = evaluate_retrieval(model, data.validation, base.eval, show_progress=False).metrics["mrr@20"]
    for lr, bs in GRID:
        cfg = demo_config("/tmp/unused", overrides=[f"train.learning_rate={lr}", f"train.batch_size={bs}",
                                                     f"train.epochs={EPOCHS}"])
        model = load_sentence_transformer(None)
        evaluator = make_trainer_evaluator(data.validation, cfg.eval, name="val")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stats = task.train(model, data, cfg, workdir=Path(tmp), evaluator=evaluator)
        curve = [round(h["mrr@20"], 4) for h in stats.history]
        rows.append({"learning_rate": lr, "batch_size": bs, "val_mrr@20_by_epoch": curve,
                     "best_epoch": 1 + curve.index(max(curve)), "best": max(curve),
                     "train_seconds": round(stats.seconds, 1), "wall_seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "defaults.json").write_text(json.dumps({"pretrained_val_mrr@20": start_score, "runs": rows}, indent=2))
    lines = ["# Training defaults, measured on the demo data", "",
             f"Validation MRR@20 (80 held-out training queries vs 503 answers) after each epoch; pre-trained: {start_score:.4f}.",
             "", "| learning rate | batch | " + " | ".join(f"epoch {e}" for e in range(1, EPOCHS + 1)) + " | best epoch |",
             "|---:|---:|" + "---:|" * EPOCHS + "---:|"]
    for r in rows:
        lines.append(f"| {r['learning_rate']:g} | {r['batch_size']} | " + " | ".join(f"{v:.4f}" for v in r["val_mrr@20_by_epoch"])
                     + f" | {r['best_epoch']} |")
    (RESULTS / "defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
