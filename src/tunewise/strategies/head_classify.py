"""``head`` for classifiers (text, image) and image search: the backbone frozen, only a linear head trains.

The features that layer sees are computed once per input and kept in the feature cache
(:mod:`tunewise.strategies.feature_cache`), keyed by every weight except the head's and by
the task's preprocessing; inputs are keyed by their text, or an image's content hash. The
head then trains with the transformers ``Trainer`` on a tiny module over the cached features
(cross-entropy), so epochs after the first, later runs and budget-sweep points never re-run
the backbone. Training starts from the classifier's current head: after the task's
baseline, that is the logistic-regression probe (``classify.init_head``).

Image search trains its projection (added when the model has none) with the task's metric
loss on same-class pairs of cached pooled features.

A task plugs in with ``head_modules(model)`` (the final linear layer), ``feature_keys(inputs)``
(one string per input), ``feature_batches(inputs, batch_size)`` (model inputs, no labels)
and ``preprocessing()`` (what turns an input into those batches).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.strategies.feature_cache import cached_features, fingerprint, tensors_fingerprint


def classifier_features_key(model: nn.Module, task: Any) -> str:
    """Fingerprint of every weight but the head's, and of the task's preprocessing."""
    head_ids = {id(p) for m in task.head_modules(model) for p in m.parameters()}
    body = {n: t for n, t in model.state_dict(keep_vars=True).items() if id(t) not in head_ids}
    return fingerprint(kind="classifier-head-inputs", weights=tensors_fingerprint(body), preprocessing=task.preprocessing())


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


def _EpochTimer(seconds: list[float]):
    """A TrainerCallback appending each epoch's wall seconds to ``seconds``."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def train_classifier_head(model: nn.Module, task: Any, data: Any, options: Any, config: RunConfig, *,
                          workdir: Path, callbacks: list | None = None):
    """Cache the head's inputs for every training item, then train the head on them."""
    from datasets import Dataset
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from tunewise.strategies.head import _single_thread, head_train_stats
    from tunewise.tasks.classifying import head_inputs

    (head,) = task.head_modules(model)
    device = str(next(model.parameters()).device)
    keys = task.feature_keys(data.train)
    by_key = dict(zip(keys, data.train))
    key = classifier_features_key(model, task)

    def compute(todo: list[str]) -> torch.Tensor:
        return head_inputs(model, head, task.feature_batches([by_key[k] for k in todo], config.eval.batch_size), device)

    cache = cached_features(key, keys, compute, use_cache=options.cache)
    module = LinearOverFeatures(head, cache.features.to(device))
    dataset = Dataset.from_dict({"rows": list(range(len(keys))), "labels": list(data.train_labels)})
    epoch_seconds: list[float] = []
    args = TrainingArguments(
        output_dir=str(workdir), num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
        learning_rate=options.head_lr, warmup_steps=config.train.warmup_ratio, weight_decay=config.train.weight_decay,
        seed=config.seed, data_seed=config.seed, logging_strategy="epoch", report_to="none", save_strategy="no",
        use_cpu=not device.startswith("cuda"), dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    trainer = Trainer(model=module, args=args, train_dataset=dataset, callbacks=[_EpochTimer(epoch_seconds), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    with _single_thread(device):
        output = trainer.train()
    train_seconds = time.perf_counter() - start
    return head_train_stats(cache, key, options, trainer, output, train_seconds, epoch_seconds, config,
                            examples=len(keys), inputs={"inputs": len(keys)})


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
    import random

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
                            workdir: Path, callbacks: list | None = None):
    """Cache pooled features of every training image, then train the projection on them."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from tunewise.strategies.head import _single_thread, head_train_stats
    from tunewise.tasks.image_losses import build_loss

    device = str(next(model.parameters()).device)
    keys = task.feature_keys(data.train)
    by_key = dict(zip(keys, data.train))
    key = fingerprint(kind="image-features", weights=tensors_fingerprint(model.features.state_dict()),
                      preprocessing=task.preprocessing())

    @torch.inference_mode()
    def compute(todo: list[str]) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return torch.cat([model.features(b["pixel_values"].to(device)).float().cpu()
                              for b in task.feature_batches([by_key[k] for k in todo], config.eval.batch_size)])
        finally:
            model.train(was)

    cache = cached_features(key, keys, compute, use_cache=options.cache)
    projection = model.projection
    loss_fn = build_loss(config.train.loss, config.image, projection.out_features, len(data.classes)).to(device)
    module = ProjectionOverFeatures(projection, loss_fn, cache.features.to(device))
    epoch_seconds: list[float] = []
    args = TrainingArguments(
        output_dir=str(workdir), num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
        learning_rate=options.head_lr, warmup_steps=config.train.warmup_ratio, weight_decay=config.train.weight_decay,
        seed=config.seed, data_seed=config.seed, logging_strategy="epoch", report_to="none", save_strategy="no",
        use_cpu=not device.startswith("cuda"), dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    trainer = Trainer(model=module, args=args, train_dataset=_pairs(list(data.train_labels), config.seed),
                      data_collator=_collate_pairs, callbacks=[_EpochTimer(epoch_seconds), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    with _single_thread(device):
        output = trainer.train()
    return head_train_stats(cache, key, options, trainer, output, time.perf_counter() - start, epoch_seconds, config,
                            examples=len(keys), inputs={"inputs": len(keys)})
