"""Metric-learning losses for image embeddings with class labels, selectable by name.

All take L2-normalised embeddings (b, d) and integer labels (b,); a batch holds each
anchor with at least one same-class image (see the image-search task's pair dataset).

| name     | loss                                                                 |
|----------|----------------------------------------------------------------------|
| mnrl     | in-batch contrastive with labels (supervised InfoNCE / SupCon)       |
| triplet  | batch-hard triplet on cosine distance with a margin                  |
| arcface  | additive angular margin softmax over learned class centres           |

References: Khosla et al. 2020, "Supervised Contrastive Learning" (arXiv:2004.11362);
Hermans et al. 2017, "In Defense of the Triplet Loss for Person Re-Identification"
(arXiv:1703.07737); Deng et al. 2019, "ArcFace" (arXiv:1801.07698).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tunewise.data.image_config import ImageConfig
from tunewise.errors import TunewiseError, did_you_mean

IMAGE_LOSSES = ("mnrl", "triplet", "arcface")


class SupConLoss(nn.Module):
    """Mean over anchors of -log(sum of softmax mass on its positives), self excluded."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sim = emb @ emb.T / self.temperature  # (b, b)
        self_mask = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
        sim = sim.masked_fill(self_mask, float("-inf"))
        positives = (labels[:, None] == labels[None, :]) & ~self_mask
        log_prob = sim.log_softmax(dim=1)
        has_pos = positives.any(dim=1)
        pos_log_prob = torch.logsumexp(log_prob.masked_fill(~positives, float("-inf")), dim=1)
        return -pos_log_prob[has_pos].mean()


class BatchHardTripletLoss(nn.Module):
    """For each anchor: hardest positive (farthest) vs hardest negative (closest), cosine distance."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = 1 - emb @ emb.T  # (b, b) cosine distance
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
        hardest_pos = dist.masked_fill(~same | eye, float("-inf")).max(dim=1).values
        hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
        valid = torch.isfinite(hardest_pos) & torch.isfinite(hardest_neg)
        if not valid.any():
            return emb.sum() * 0.0
        return F.relu(hardest_pos - hardest_neg + self.margin)[valid].mean()


class ArcFaceLoss(nn.Module):
    """Softmax over cos(theta + m) for the true class, cos(theta) for the others, times s."""

    def __init__(self, dim: int, n_classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.centres, dim=1).T  # (b, n_classes)
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        # Past pi - m the margin would raise the logit again: use the CosFace-style fallback.
        target = torch.where(theta + self.margin < math.pi, target, cos - self.margin * math.sin(self.margin))
        one_hot = F.one_hot(labels, cos.shape[1]).bool()
        logits = torch.where(one_hot, target, cos) * self.scale
        return F.cross_entropy(logits, labels)


def build_loss(name: str, cfg: ImageConfig, dim: int, n_classes: int) -> nn.Module:
    """The loss ``train.loss`` names for image search."""
    if name == "mnrl":
        return SupConLoss(cfg.temperature)
    if name == "triplet":
        return BatchHardTripletLoss(cfg.margin)
    if name == "arcface":
        return ArcFaceLoss(dim, n_classes, cfg.arcface_margin, cfg.arcface_scale)
    raise TunewiseError(f"train.loss: unknown image-search loss '{name}'{did_you_mean(name, IMAGE_LOSSES)}; "
                        f"choose one of: {', '.join(IMAGE_LOSSES)}")
