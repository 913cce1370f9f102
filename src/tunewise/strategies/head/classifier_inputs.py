"""``head`` over ``classifier-inputs``: what a classifier's final linear layer sees, cached per input.

The features are keyed by every weight except the head's and by the task's preprocessing;
inputs are keyed by the task (``CachesFeatures.feature_keys``: a text, or an image's content
hash). The classifier's own head then trains on them with cross-entropy, starting from its
current weights: after the task's baseline, that is the logistic-regression probe
(``classify.init_head``). Epochs after the first, later runs and budget-sweep points never
re-run the backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.evaluate.batching import in_order, inverse, length_order
from tunewise.models.feature_cache import cached_features, fingerprint
from tunewise.strategies.base import head_modules_of
from tunewise.strategies.head.training import FeatureKind, body_fingerprint, feature_inputs, train_cached_head
from tunewise.tasks.base import TrainStats


class LinearOverFeatures(nn.Module):
    """The classifier's own head applied to cached features; returns the cross-entropy loss."""

    def __init__(self, head: nn.Linear, features: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("features", features, persistent=False)

    def forward(self, rows: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.head(self.features[rows].to(self.head.weight.dtype))  # (batch, n_classes)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def train_classifier_head(model: nn.Module, task: Any, data: Any, options: Any, config: RunConfig, *,
                          workdir: Path, callbacks: list | None = None, validate: Any = None) -> TrainStats:
    """Cache the head's inputs for every training item, then train the head on them."""
    from datasets import Dataset

    from tunewise.tasks.classifier_shared import head_inputs

    inputs = feature_inputs(task)
    (head,) = head_modules_of(task, model)
    device = str(next(model.parameters()).device)
    train, labels, levers = list(data.train), list(data.train_labels), {}
    if "augment" in task.spec.levers:  # text: augmented copies are more cached inputs (the head sees them all)
        from tunewise.data.training_rows import labeled_texts

        train, labels, levers = labeled_texts(train, labels, config)
    keys = inputs.feature_keys(train)
    by_key = dict(zip(keys, train))
    key = fingerprint(kind="classifier-head-inputs", weights=body_fingerprint(model, task), preprocessing=inputs.preprocessing())

    def compute(todo: list[str]) -> torch.Tensor:
        items = [by_key[k] for k in todo]
        order = length_order(items)  # texts of similar length share a batch (images keep their order)
        rows = head_inputs(model, head, inputs.feature_batches(in_order(items, order), config.eval.batch_size), device)
        return rows[inverse(order)]

    cache = cached_features(key, keys, compute, use_cache=options.cache)
    module = LinearOverFeatures(head, cache.features.to(device))
    dataset = Dataset.from_dict({"rows": list(range(len(keys))), "labels": labels})
    if validate is not None and data.validation:
        validate = _cached_validation(module, inputs, data, key, compute, options, device, by_key)
    stats = train_cached_head(module, dataset, cache, key, options, config, device=device, workdir=workdir,
                              callbacks=callbacks, examples=len(keys), inputs={"inputs": len(keys)}, validate=validate)
    if levers:
        stats.details["levers"] = levers
    return stats


def _cached_validation(module: LinearOverFeatures, inputs: Any, data: Any, key: str, compute: Any, options: Any,
                       device: str, by_key: dict) -> Any:
    """Early stopping's validation score from cached head inputs: the backbone runs over the
    validation items once, not at every evaluation (the task's own metrics, on the head's argmax)."""
    from tunewise.evaluate.classification import classification_metrics

    val_keys = inputs.feature_keys(data.validation)
    by_key.update(zip(val_keys, data.validation))  # compute() looks inputs up here
    features = cached_features(key, val_keys, compute, use_cache=options.cache).features.to(device)
    labels = list(data.validation_labels)

    def validate() -> dict[str, float]:
        with torch.inference_mode():
            preds = module.head(features.to(module.head.weight.dtype)).argmax(-1).tolist()
        return classification_metrics(labels, preds, len(data.classes))

    return validate


KIND = FeatureKind(train=train_classifier_head)
