"""``head`` over ``clip-towers``: both towers' pooled outputs, cached per image content and per caption.

CLIP's heads are its two projections into the shared space; they train on the cached pooled
outputs with CLIP's symmetric contrastive loss, the logit scale kept as loaded. The features
are keyed by every weight except the projections' and by the task's preprocessing. A task
declaring these features provides :class:`ClipTowers`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.models.feature_cache import cached_features, fingerprint
from tunewise.strategies.head.training import FeatureKind, body_fingerprint, train_cached_head
from tunewise.tasks.base import TrainStats


@runtime_checkable
class ClipTowers(Protocol):
    """What a task with ``clip-towers`` head features provides."""

    def pooled_images(self, model: Any, paths: list[Path], batch_size: int) -> torch.Tensor: ...  # (n, vision hidden)

    def pooled_texts(self, model: Any, texts: list[str], batch_size: int) -> torch.Tensor: ...  # (n, text hidden)

    def preprocessing(self) -> dict[str, Any]: ...


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
                    workdir: Path, callbacks: list | None = None, validate: Any = None) -> TrainStats:
    """Cache both towers' pooled outputs for the training pairs, then train the projections."""
    from tunewise.data.images import image_content_keys

    if not isinstance(task, ClipTowers):
        raise TypeError(f"task {task.spec.name} declares head features 'clip-towers' but has no "
                        "pooled_images / pooled_texts / preprocessing")
    device = str(next(model.parameters()).device)
    weights, pre = body_fingerprint(model, task), task.preprocessing()
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
    both = dataclasses.replace(images, seconds=images.seconds + texts.seconds, encoded=images.encoded + texts.encoded,
                               status=images.status if images.status == texts.status else f"images {images.status}, captions {texts.status}")
    return train_cached_head(module, [{"rows": i} for i in range(len(paths))], both, "", options, config,
                             device=device, workdir=workdir, callbacks=callbacks, examples=len(paths),
                             inputs={"inputs": len(image_keys) + len(text_keys)}, validate=validate)


KIND = FeatureKind(train=train_clip_head)
