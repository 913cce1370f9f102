"""``head`` over ``pooled-image``: an image encoder's pooled features, cached per image content.

The task appends the projection when the model has none (``CanAddHead``); it trains with the
task's metric loss (``train.loss``, built by :func:`tunewise.tasks.image_losses.build_loss`) on
same-class pairs of cached pooled features, paired as the task's own training pairs them.
The model exposes ``features`` (the frozen body: pixels to pooled features) and ``projection``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.models.feature_cache import cached_features, fingerprint, tensors_fingerprint
from tunewise.strategies.head.training import FeatureKind, feature_inputs, train_cached_head
from tunewise.tasks.base import TrainStats


class ProjectionOverFeatures(nn.Module):
    """Image search: the projection over cached pooled features, L2-normalised, with the metric loss."""

    def __init__(self, projection: nn.Linear, loss_fn: nn.Module, features: torch.Tensor) -> None:
        super().__init__()
        self.projection, self.loss_fn = projection, loss_fn
        self.register_buffer("features", features, persistent=False)

    def forward(self, rows: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = nn.functional.normalize(self.projection(self.features[rows]), dim=-1)  # (2b, d)
        return {"loss": self.loss_fn(emb, labels)}


def _pairs(labels: list[int], seed: int) -> list[dict[str, list[int]]]:
    """Item i paired with a seeded random other item of its class (as the task's PairDataset)."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    out = []
    for i, label in enumerate(labels):
        same = by_class[label]
        j = i if len(same) == 1 else rng.choice([k for k in same if k != i])
        out.append({"rows": [i, j], "labels": [label, labels[j]]})
    return out


def _collate_pairs(items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    return {"rows": torch.tensor([r for it in items for r in it["rows"]]),
            "labels": torch.tensor([lab for it in items for lab in it["labels"]])}


def train_image_search_head(model: nn.Module, task: Any, data: Any, options: Any, config: RunConfig, *,
                            workdir: Path, callbacks: list | None = None, validate: Any = None) -> TrainStats:
    """Cache pooled features of every training image, then train the projection on them."""
    from tunewise.tasks.image_losses import build_loss

    inputs = feature_inputs(task)
    device = str(next(model.parameters()).device)
    keys = inputs.feature_keys(data.train)
    by_key = dict(zip(keys, data.train))
    key = fingerprint(kind="image-features", weights=tensors_fingerprint(model.features.state_dict()),
                      preprocessing=inputs.preprocessing())

    @torch.inference_mode()
    def compute(todo: list[str]) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return torch.cat([model.features(b["pixel_values"].to(device)).float().cpu()
                              for b in inputs.feature_batches([by_key[k] for k in todo], config.eval.batch_size)])
        finally:
            model.train(was)

    cache = cached_features(key, keys, compute, use_cache=options.cache)
    projection = model.projection
    loss_fn = build_loss(config.train.loss, config.image, projection.out_features, len(data.classes)).to(device)
    module = ProjectionOverFeatures(projection, loss_fn, cache.features.to(device))
    return train_cached_head(module, _pairs(list(data.train_labels), config.seed), cache, key, options, config,
                             device=device, workdir=workdir, callbacks=callbacks, examples=len(keys),
                             inputs={"inputs": len(keys)}, collator=_collate_pairs, validate=validate)


KIND = FeatureKind(train=train_image_search_head, adds_head=True)
