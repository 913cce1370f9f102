"""``head`` for the tasks other than text search: classifiers, image search and CLIP: the backbone frozen, only linear heads train.

The features that layer sees are computed once per input and kept in the feature cache
(:mod:`tunewise.strategies.feature_cache`), keyed by every weight except the head's and by
the task's preprocessing; inputs are keyed by their text, or an image's content hash. The
head then trains with the transformers ``Trainer`` on a tiny module over the cached features
(cross-entropy), so epochs after the first, later runs and budget-sweep points never re-run
the backbone. Training starts from the classifier's current head: after the task's
baseline, that is the logistic-regression probe (``classify.init_head``).

Image search trains its projection (added when the model has none) with the task's metric
loss on same-class pairs of cached pooled features. CLIP trains its two projections on the
towers' cached pooled outputs with its symmetric contrastive loss (logit scale kept).

A task plugs in with ``head_modules(model)`` (the final linear layer), ``feature_keys(inputs)``
(one string per input), ``feature_batches(inputs, batch_size)`` (model inputs, no labels)
and ``preprocessing()`` (what turns an input into those batches).
"""

from __future__ import annotations

import dataclasses
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


def train_classifier_head(model: nn.Module, task: Any, data: Any, options: Any, config: RunConfig, *,
                          workdir: Path, callbacks: list | None = None):
    """Cache the head's inputs for every training item, then train the head on them."""
    from datasets import Dataset

    from tunewise.strategies.head import head_train_stats, train_head_module
    from tunewise.tasks.classifier_shared import head_inputs

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
    trainer, output, seconds = train_head_module(module, dataset, options, config, device=device, workdir=workdir,
                                                 epoch_seconds=epoch_seconds, callbacks=callbacks)
    return head_train_stats(cache, key, options, trainer, output, seconds, epoch_seconds, config,
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
    from tunewise.strategies.head import head_train_stats, train_head_module
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
    trainer, output, seconds = train_head_module(module, _pairs(list(data.train_labels), config.seed), options, config,
                                                 device=device, workdir=workdir, epoch_seconds=epoch_seconds,
                                                 callbacks=callbacks, collator=_collate_pairs)
    return head_train_stats(cache, key, options, trainer, output, seconds, epoch_seconds, config,
                            examples=len(keys), inputs={"inputs": len(keys)})


class ClipProjections(nn.Module):
    """CLIP's projections over cached pooled tower outputs, with the symmetric contrastive loss."""

    def __init__(self, model: nn.Module, images: torch.Tensor, texts: torch.Tensor) -> None:
        super().__init__()
        self.visual, self.text = model.visual_projection, model.text_projection
        self.scale = float(model.logit_scale.exp())
        self.register_buffer("images", images, persistent=False)
        self.register_buffer("texts", texts, persistent=False)

    def forward(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        img = nn.functional.normalize(self.visual(self.images[rows]), dim=-1)  # (b, d)
        txt = nn.functional.normalize(self.text(self.texts[rows]), dim=-1)  # (b, d)
        logits = self.scale * txt @ img.T  # (b, b): caption i belongs with image i
        target = torch.arange(len(rows), device=logits.device)
        loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
        return {"loss": loss}


def train_clip_head(model: nn.Module, task: Any, data: Any, options: Any, config: RunConfig, *,
                    workdir: Path, callbacks: list | None = None):
    """Cache both towers' pooled outputs for the training pairs, then train the projections."""
    from tunewise.data.images import image_content_keys
    from tunewise.strategies.head import head_train_stats, train_head_module

    device = str(next(model.parameters()).device)
    head_ids = {id(p) for m in task.head_modules(model) for p in m.parameters()}
    body = {n: t for n, t in model.state_dict(keep_vars=True).items() if id(t) not in head_ids}
    weights, pre = tensors_fingerprint(body), task.preprocessing()
    paths, captions = [p for p, _ in data.train], [c for _, c in data.train]
    image_keys, text_keys = image_content_keys(paths), [f"text:{c}" for c in captions]
    by_image, by_text = dict(zip(image_keys, paths)), dict(zip(text_keys, captions))
    batch = config.eval.batch_size
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            images = cached_features(fingerprint(kind="clip-vision", weights=weights, preprocessing=pre), image_keys,
                                     lambda todo: task.pooled_images(model, [by_image[k] for k in todo], batch),
                                     use_cache=options.cache)
            texts = cached_features(fingerprint(kind="clip-text", weights=weights, preprocessing=pre), text_keys,
                                    lambda todo: task.pooled_texts(model, [by_text[k] for k in todo], batch),
                                    use_cache=options.cache)
    finally:
        model.train(was)
    module = ClipProjections(model, images.features.to(device), texts.features.to(device))
    epoch_seconds: list[float] = []
    trainer, output, seconds = train_head_module(module, [{"rows": i} for i in range(len(paths))], options, config,
                                                 device=device, workdir=workdir, epoch_seconds=epoch_seconds,
                                                 callbacks=callbacks)
    both = dataclasses.replace(images, seconds=images.seconds + texts.seconds, encoded=images.encoded + texts.encoded,
                               status=images.status if images.status == texts.status else f"images {images.status}, captions {texts.status}")
    return head_train_stats(both, "", options, trainer, output, seconds, epoch_seconds, config,
                            examples=len(paths), inputs={"inputs": len(image_keys) + len(text_keys)})
