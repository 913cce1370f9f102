"""Embedding losses selectable by name, and the training rows each one needs.

| name          | sentence-transformers loss           | rows                                   |
|---------------|--------------------------------------|----------------------------------------|
| mnrl          | MultipleNegativesRankingLoss         | (anchor, positive[, negative])         |
| cached_mnrl   | CachedMultipleNegativesRankingLoss   | same; large batches in small chunks     |
| triplet       | TripletLoss                          | (anchor, positive, negative)           |
| cosent        | CoSENTLoss                           | (text1, text2, score in [0, 1])        |
| contrastive   | ContrastiveLoss                      | (text1, text2, label 0/1)              |

Pair-score losses given plain pairs get sampled negatives (score/label 0) next to every
positive (score/label 1), seeded, so that pairs data works with every loss.

References: Henderson et al. 2017 (in-batch negatives, arXiv:1705.00652); Gao et al. 2021
(GradCache, arXiv:2101.06983); Su 2022 (CoSENT); Hadsell et al. 2006 (contrastive loss).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tunewise.config import TrainConfig
from tunewise.errors import TunewiseError
from tunewise.registry import Registry


@dataclass(frozen=True)
class LossSpec:
    """How to build a loss and the rows it trains on."""

    build: Callable  # (model, TrainConfig) -> torch.nn.Module
    in_batch_negatives: bool  # wants the no-duplicates batch sampler
    rows: str  # "anchor", "triplet" or "scored"


LOSSES: Registry[LossSpec] = Registry("loss", "train.loss")


def _st_losses():
    from sentence_transformers.sentence_transformer import losses

    return losses


LOSSES.register("mnrl")(LossSpec(lambda m, c: _st_losses().MultipleNegativesRankingLoss(m), True, "anchor"))
LOSSES.register("cached_mnrl")(
    LossSpec(lambda m, c: _st_losses().CachedMultipleNegativesRankingLoss(m, mini_batch_size=c.mini_batch_size,
                                                                          show_progress_bar=False), True, "anchor")
)
LOSSES.register("triplet")(LossSpec(lambda m, c: _st_losses().TripletLoss(m, triplet_margin=c.margin), False, "triplet"))
LOSSES.register("cosent")(LossSpec(lambda m, c: _st_losses().CoSENTLoss(m), False, "scored"))
LOSSES.register("contrastive")(LossSpec(lambda m, c: _st_losses().ContrastiveLoss(m), False, "scored"))


def rows_for_loss(spec: LossSpec, name: str, rows: list[dict[str, str]], cfg: TrainConfig, seed: int) -> list[dict]:
    """Turn (anchor, positive[, negative | negative_1..n]) rows into what the loss expects.

    Mined negatives (``negative_1..n``, :mod:`tunewise.data.hard_negatives`): the ranking losses
    take them as extra columns; triplet makes one triplet per negative; cosent/contrastive score
    each one 0 (before any sampled negatives).
    """
    from tunewise.data.hard_negatives import negative_columns, one_negative_per_row

    has_negative = bool(rows) and bool(negative_columns(rows[0]))
    if spec.rows == "anchor":
        return rows
    if has_negative and "negative" not in rows[0] and spec.rows == "triplet":
        return one_negative_per_row(rows)
    if spec.rows == "triplet":
        if not has_negative:
            raise TunewiseError(
                f"train.loss: '{name}' needs triplets (query, positive, negative); set data.kind: triplets "
                "with a negative column, or use train.loss: mnrl"
            )
        return rows
    # Scored pairs: every positive gets label 1; negatives (given or sampled) get 0.
    rng = random.Random(seed)
    positives = [r["positive"] for r in rows]
    out: list[dict] = []
    label_key = "score" if name == "cosent" else "label"
    for r in rows:
        out.append({"sentence1": r["anchor"], "sentence2": r["positive"], label_key: 1.0 if label_key == "score" else 1})
        negatives = [r[key] for key in negative_columns(r)]
        while len(negatives) < cfg.negatives_per_pair and len(set(positives)) > 1:
            candidate = positives[rng.randrange(len(positives))]
            if candidate != r["positive"]:
                negatives.append(candidate)
        for neg in negatives:
            out.append({"sentence1": r["anchor"], "sentence2": neg, label_key: 0.0 if label_key == "score" else 0})
    return out
