"""Image embeddings for search (image -> image), trained with metric-learning losses.

The model is a vision backbone (:mod:`tunewise.models.vision`), pooled, with an optional
linear projection head, L2-normalised. Training is the transformers Trainer on pairs of
same-class images (each anchor meets at least one positive in its batch) with the loss
``train.loss`` names (:mod:`tunewise.tasks.image_losses`).

Evaluation holds out a stratified share of the images and searches each held-out image
against all the other held-out images (itself excluded): images of the same class are the
relevant ones. Neither queries nor corpus were seen in training, and the metrics are the
foundation's retrieval metrics (:mod:`tunewise.evaluate.metrics`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunewise.config import RunConfig
from tunewise.data.images import ImageDataset, Preprocess, encode_batches
from tunewise.data.labeled import LabeledData, labeled_n_train, labeled_report, labeled_subset
from tunewise.errors import TunewiseError
from tunewise.evaluate.metrics import mean_per_metric, parse_metric_name, retrieval_metrics_per_query
from tunewise.evaluate.retrieval import EvalResult, metric_names
from tunewise.evaluate.search import top_k
from tunewise.models.vision import VisionMeta, check_backbone, frozen_batchnorm, load_features, save_network
from tunewise.tasks.base import TASKS, HeadSupport, MemoryProfile, TaskSpec, TrainStats
from tunewise.tasks.classifier_shared import merged_for_saving, run_trainer
from tunewise.tasks.image_classification import CachedImageFeatures, display_name, prepare_labeled_images, preprocess
from tunewise.tasks.image_losses import build_loss
from tunewise.tasks.training import early_stopping

PROJECTION_FILE = "projection.safetensors"


class ImageEncoder(nn.Module):
    """Backbone features -> optional projection -> L2-normalised embedding (b, d).

    ``forward(pixel_values, labels)`` returns ``{"loss", "embeddings"}`` while a loss is
    attached (training), ``{"embeddings"}`` otherwise.
    """

    def __init__(self, features: nn.Module, dim: int, projection_dim: int | None = None) -> None:
        super().__init__()
        self.features = features
        self.projection = nn.Linear(dim, projection_dim) if projection_dim else None
        if self.projection is not None:
            # An orthonormal random projection keeps cosine geometry roughly intact, so the
            # pre-trained "before" is not penalised for the new head.
            nn.init.orthogonal_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)
        self.loss_fn: nn.Module | None = None

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.features(pixel_values)  # (b, dim)
        if self.projection is not None:
            x = self.projection(x)  # (b, projection_dim)
        return F.normalize(x, dim=-1)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        emb = self.encode(pixel_values)
        if labels is not None and self.loss_fn is not None:
            return {"loss": self.loss_fn(emb, labels), "embeddings": emb}
        return {"embeddings": emb}


class PairDataset(torch.utils.data.Dataset):
    """Item i: training image i and a random other image of its class, both augmented."""

    def __init__(self, images: ImageDataset, labels: list[int], seed: int) -> None:
        self.images, self.labels = images, labels
        self.by_class: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            self.by_class.setdefault(label, []).append(i)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        same = self.by_class[self.labels[i]]
        j = i if len(same) == 1 else self.rng.choice([k for k in same if k != i])
        return {"pixel_values": torch.stack([self.images.image(i), self.images.image(j)]),
                "labels": torch.tensor([self.labels[i], self.labels[j]])}


def collate_pairs(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.cat([it["pixel_values"] for it in items]),  # (2b, 3, S, S)
            "labels": torch.cat([it["labels"] for it in items])}


@TASKS.register("image-search")
class ImageSearchTask(CachedImageFeatures):
    """Fine-tune a vision backbone so that images retrieve images of their class."""

    saves_merged = True  # save() folds a LoRA adapter in: `tunewise merge` copies the run's model

    spec = TaskSpec(
        name="image-search", summary="image search: images retrieve images of their class",
        unit="images", primary="mrr@20",
        head=HeadSupport("pooled-image", refused_options=("activation",), why="image search trains a linear projection"),
        memory=MemoryProfile(step="image", sequence="image", arch_from="model"),
        default_model="EfficientNet-Lite0 (packaged)",
        modality="image",
    )
    # the data half of the contract, shared by the tasks over LabeledData
    data_report = staticmethod(labeled_report)
    n_train = staticmethod(labeled_n_train)
    subset = staticmethod(labeled_subset)

    def __init__(self) -> None:
        self._meta: VisionMeta | None = None
        self._pre: Preprocess | None = None
        self._classes: list[str] = []

    def check_config(self, config: RunConfig) -> None:
        build_loss(config.train.loss, config.image, 1, 2)
        metric_names(config.eval)
        check_backbone(config.model, task=self.spec.name)

    def prepare_data(self, config: RunConfig) -> LabeledData[Path]:
        self.check_config(config)  # an unknown loss fails before reading data
        data = prepare_labeled_images(config, min_held=2)  # every held-out image needs a same-class match
        self._classes = data.classes
        data.report["eval_queries"] = sum(1 for label in data.eval_labels if data.eval_labels.count(label) > 1)
        if data.report["eval_queries"] == 0:
            raise TunewiseError(f"{config.data.train}: no class has 3 or more images, so no held-out image has a match "
                                "to find; add images (image search needs 2 held out and 1 to train per class)")
        data.report["eval_corpus"] = len(data.eval)
        return data

    def load_model(self, config: RunConfig, device: str) -> ImageEncoder:
        from safetensors.torch import load_file

        features, self._meta = load_features(config.model, config.image.size, task=self.spec.name)
        self._pre = preprocess(config, self._meta)
        saved = Path(config.model).expanduser() / PROJECTION_FILE if config.model else None
        if saved is not None and saved.is_file():
            state = load_file(str(saved))
            model = ImageEncoder(features, self._meta.dim, state["weight"].shape[0])
            model.projection.load_state_dict(state)  # type: ignore[union-attr]
        else:
            model = ImageEncoder(features, self._meta.dim, config.image.projection_dim)
        return model.to(device)

    def modules(self, model: ImageEncoder) -> nn.Module:
        return model

    def backbone(self, model: ImageEncoder) -> nn.Module:
        inner = model.features
        return getattr(inner, "net", None) or getattr(inner, "model", inner)

    def set_backbone(self, model: ImageEncoder, backbone: nn.Module) -> None:
        inner = model.features
        if hasattr(inner, "net"):
            inner.net = backbone
        else:
            inner.model = backbone

    def head_modules(self, model: ImageEncoder) -> list:
        return [model.projection] if model.projection is not None else []

    def add_head(self, model: ImageEncoder, dim: int | None, activation: str = "identity") -> ImageEncoder:
        """Strategy head: a projection to ``dim`` (default: the feature size), if there is none yet."""
        if model.projection is None:
            assert self._meta is not None
            with torch.random.fork_rng():
                torch.manual_seed(0)  # the same head every run
                model.projection = nn.Linear(self._meta.dim, dim or self._meta.dim).to(next(model.parameters()).device)
                nn.init.orthogonal_(model.projection.weight)
                nn.init.zeros_(model.projection.bias)
        elif dim is not None and dim != model.projection.out_features:
            raise TunewiseError(f"strategy.dim: the model already projects to {model.projection.out_features}; drop strategy.dim")
        return model

    @torch.inference_mode()
    def embed(self, model: ImageEncoder, paths: list[Path], batch_size: int, progress: bool = True) -> torch.Tensor:
        """L2-normalised embeddings (n, d) of ``paths``."""
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        out = [model.encode(b["pixel_values"].to(device)).float().cpu()
               for b in encode_batches(ImageDataset(paths, None, self._pre), batch_size, "encoding images", progress)]
        model.train(was)
        return torch.cat(out)

    def evaluate(self, model: ImageEncoder, data: LabeledData[Path], config: RunConfig, *, split: str = "eval") -> EvalResult:
        paths, labels = (data.validation, data.validation_labels) if split == "validation" else (data.eval, data.eval_labels)
        if paths is None or labels is None:
            raise TunewiseError(f"no {split} set was prepared")
        names = metric_names(config.eval)
        depth = max(parse_metric_name(n)[1] for n in names)
        start = time.perf_counter()
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            emb = self.embed(model, paths, config.eval.batch_size).float()
        k = min(depth + 1, len(paths))
        scores, idx = top_k(emb, emb, k, normalize=False, backend=config.eval.backend)
        ids = [f"i{i}" for i in range(len(paths))]
        run, run_scores, qrels = {}, {}, {}
        for q, (row, row_scores) in enumerate(zip(idx.tolist(), scores.tolist())):
            kept = [(d, s) for d, s in zip(row, row_scores) if d != q][:depth]  # leave the query out
            run[ids[q]] = [ids[d] for d, _ in kept]
            run_scores[ids[q]] = [s for _, s in kept]
            relevant = {ids[d]: 1 for d in range(len(paths)) if d != q and labels[d] == labels[q]}
            if relevant:
                qrels[ids[q]] = relevant
        per_query = retrieval_metrics_per_query(run, qrels, ks=sorted({parse_metric_name(n)[1] for n in names}))
        all_metrics = mean_per_metric(per_query)
        metrics = {n: float(all_metrics[n]) for n in names}
        examples = []
        for q in list(qrels)[: config.eval.examples]:
            qi = int(q[1:])
            examples.append({
                "query": display_name(paths[qi]),
                "relevant": [data.classes[labels[qi]]],
                "top": [{"text": display_name(paths[int(d[1:])]), "score": round(s, 4), "relevant": d in qrels[q]}
                        for d, s in zip(run[q][:3], run_scores[q][:3])],
            })
        return EvalResult(metrics, time.perf_counter() - start, examples, run, {n: per_query[n] for n in names})

    def train(self, model: ImageEncoder, data: LabeledData[Path], config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, param_groups: list | None = None, **extra_args: Any) -> TrainStats:
        """Train with the transformers Trainer on same-class pairs and the chosen metric loss."""
        dim = model.projection.out_features if model.projection is not None else self._meta.dim  # type: ignore[union-attr]
        device = next(model.parameters()).device
        model.loss_fn = build_loss(config.train.loss, config.image, dim, len(data.classes)).to(device)
        images = ImageDataset(data.train, data.train_labels, self._pre, augment=config.image, seed=config.seed)
        validate = None
        if early_stopping(config):  # each validation image searches the other validation images
            validate = lambda: self.evaluate(model, data, config, split="validation").metrics  # noqa: E731
        try:
            with frozen_batchnorm(model, config.image.freeze_batchnorm):
                return run_trainer(model, PairDataset(images, data.train_labels, config.seed), config, workdir=workdir,
                                   device=str(device), collator=collate_pairs, callbacks=callbacks, param_groups=param_groups,
                                   validate=validate, eval_dataset=data.validation if validate else None, **extra_args)
        finally:
            model.loss_fn = None  # training-only parameters (ArcFace centres) are not part of the encoder

    def save(self, model: ImageEncoder, path: Path) -> None:
        from safetensors.torch import save_file

        assert self._meta is not None and self._pre is not None
        merged = merged_for_saving(self.backbone(model))
        if merged is not None:
            self.set_backbone(model, merged)
        extra = {**self._meta.extra, "task": self.spec.name, "image_size": self._pre.size, "normalize": True,
                 "projection_dim": model.projection.out_features if model.projection is not None else None}
        meta = dataclasses.replace(self._meta, mean=self._pre.mean, std=self._pre.std, extra=extra)
        save_network(model.features, meta, Path(path), self._pre.size)
        if model.projection is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.projection.state_dict().items()},
                      str(Path(path) / PROJECTION_FILE))

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: the saved encoder embeds image files (with a corpus of images: searches it)."""
        from tunewise.predict import Predictor

        model = self.load_model(config, device).eval()
        return Predictor(columns=("image", "path", "file"), modality="image",
                         encode=lambda paths: self.embed(model, list(paths), len(paths), progress=False))

    def card_info(self, data: LabeledData[Path]) -> dict[str, str]:
        usage = (
            "import tunewise\n"
            "from tunewise.tasks.image_search import ImageSearchTask\n"
            "cfg = tunewise.load_config(None, [\"task=image-search\", \"model=path/to/this/folder\"])\n"
            "task = ImageSearchTask(); model = task.load_model(cfg, \"cpu\")\n"
            "emb = task.embed(model, [pathlib.Path(\"a.jpg\"), pathlib.Path(\"b.jpg\")], batch_size=32)  # (2, d), unit norm\n"
            "# The backbone alone also opens with its own library (see tunewise_vision.json: kind)."
        )
        n_q = data.report.get("eval_queries", len(data.eval))
        evaluated_on = (f"{n_q} held-out images each searched against the other {len(data.eval) - 1} held-out images "
                        f"({data.n_classes} classes; same class = relevant)")
        library = "transformers" if self._meta is not None and self._meta.kind == "hf" else "pytorch"
        return {"library": library, "pipeline_tag": "image-feature-extraction", "usage": usage, "evaluated_on": evaluated_on}
