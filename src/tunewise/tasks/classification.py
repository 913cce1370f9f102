"""Text classification: a pre-trained encoder with a new classification head.

The model is ``AutoModelForSequenceClassification`` (BERT-style encoders get their pooler
and a linear head), trained with the transformers :class:`Trainer` and saved so that
``AutoModelForSequenceClassification.from_pretrained(path)`` and ``pipeline("text-classification")``
open it. "Before" is the frozen backbone with a fitted linear head (see
:mod:`tunewise.tasks.classifier_shared`); "after" is the fine-tuned model, scored the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tunewise.config import RunConfig
from tunewise.data.labeled import LabeledData, labeled_chance, labeled_n_train, labeled_report, labeled_subset, read_text_labeled, split_labeled
from tunewise.errors import TunewiseError
from tunewise.models.loading import (
    check_modality,
    head_labels,
    load_errors,
    load_pretrained,
    load_pretrained_model,
    model_config,
    resolve_model,
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

DEFAULT_MAX_LENGTH = 128


def check_text_model(source: str | None, *, fetch: bool = False) -> None:
    """Refuse a model that is no text encoder (a vision backbone), naming the tasks it fits."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    check_modality(source, "text", task=ClassificationTask.spec.name,
                   accepts=MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, fetch=fetch)


def load_text_classifier(name: str | None, classes: list[str], device: str):
    """(model, tokenizer): a sequence classifier for ``classes`` on the encoder ``name``.

    A checkpoint with as many labels keeps its head (give its own labels to score it as
    trained); otherwise a new head is created (``ignore_mismatched_sizes``).

    Raises:
        TunewiseError: the folder is missing, not a text model or not loadable, or the hub id
            cannot be fetched.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(name)
    check_text_model(source, fetch=True)
    id2label = dict(enumerate(classes))
    with load_errors(source, " as a text classifier"):
        tokenizer = load_pretrained(AutoTokenizer, source)
        model = load_pretrained_model(
            AutoModelForSequenceClassification, source, num_labels=len(classes), id2label=id2label,
            label2id={c: i for i, c in id2label.items()},
            ignore_mismatched_sizes=True, dtype=torch.float32,  # fp32 master weights: a half checkpoint would not train
        )
    return model.to(device), tokenizer


def _length_sorted(texts: list[str], labels) -> tuple[list[str], list[int]]:
    """Texts and their labels, longest first (the linear probe does not depend on row order; the
    backbone pass pads each batch to little)."""
    from tunewise.evaluate.batching import in_order, length_order

    order = length_order(texts)
    return in_order(texts, order), in_order(list(labels), order)


@TASKS.register("classification")
class ClassificationTask:
    """Fine-tune a text encoder with a classification head: text -> one of N labels."""

    saves_merged = True  # save() folds a LoRA adapter in: `tunewise merge` copies the run's model

    spec = TaskSpec(
        name="classification", summary="text classification: text -> one of N labels (transformers)",
        unit="items", primary="accuracy", metrics=CLASSIFIER_METRICS, head=CLASSIFIER_HEAD,
        memory=MemoryProfile(step="classifier", sequence="model", arch_from="path"), levers=("augment",),
    )
    # the data half of the contract, shared by the tasks over LabeledData
    data_report = staticmethod(labeled_report)
    n_train = staticmethod(labeled_n_train)
    subset = staticmethod(labeled_subset)
    chance = staticmethod(labeled_chance)

    def __init__(self) -> None:
        self._classes: list[str] | None = None
        self._tokenizer: Any = None
        self._before: ClassificationResult | None = None
        self._after: ClassificationResult | None = None
        self._label_map: list[int] | None = None  # model output -> data class (a trained head, evaluated)

    def check_config(self, config: RunConfig) -> None:
        check_text_model(config.model)

    # -- data ---------------------------------------------------------------------------
    def prepare_data(self, config: RunConfig) -> LabeledData[str]:
        texts, labels = read_text_labeled(config.data)
        data = split_labeled(texts, labels, config.data, config.seed, str(config.data.train),
                             need_validation=config.train.early_stopping_patience is not None)
        self._classes = data.classes
        return data

    def folds(self, config: RunConfig, k: int):
        """Stratified k-fold splits (``--folds``); a text that appears twice stays on one side."""
        from tunewise.data.folds import labeled_folds, text_groups

        texts, labels = read_text_labeled(config.data)
        splits = labeled_folds(texts, labels, config, k, str(config.data.train), groups=text_groups(texts), what="distinct texts")
        self._classes = splits.everything.classes
        self._before = self._after = None  # classification_report.json of a --final-fit model: no held-out scores
        return splits

    # -- model --------------------------------------------------------------------------
    def load_model(self, config: RunConfig, device: str):
        return head_for_data(self, config, device)

    def load_trained(self, config: RunConfig, device: str):
        """``tunewise evaluate``: the saved text classifier (labels from its config's id2label)."""
        labels = head_labels(model_config(resolve_model(config.model), fetch=True), "ForSequenceClassification")
        return trained_head(self, config, device, labels, self.spec.default_model)

    def _load(self, config: RunConfig, labels: list[str], device: str, mapping: list[int] | None):
        model, self._tokenizer = load_text_classifier(config.model, labels, device)
        self._max_length = config.train.max_seq_length or min(DEFAULT_MAX_LENGTH, self._tokenizer.model_max_length)
        self._label_map = mapping
        return model

    def modules(self, model):
        return model

    def backbone(self, model):
        return getattr(model, "base_model", model)

    def set_backbone(self, model, backbone) -> None:
        set_hf_backbone(model, backbone)

    def head_modules(self, model) -> list:
        return [head_linear(model, len(self._classes or []))]

    def _batches(self, texts: list[str], labels: list[int] | None, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(texts), batch_size):
            batch = self._tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                    max_length=self._max_length, return_tensors="pt")
            if labels is not None:
                batch["labels"] = torch.tensor(labels[start:start + batch_size])
            yield dict(batch)

    # -- strategy head: cached head inputs -------------------------------------------------
    def feature_keys(self, texts: list[str]) -> list[str]:
        return list(texts)

    def feature_batches(self, texts: list[str], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        return self._batches(texts, None, batch_size)

    def preprocessing(self) -> dict[str, Any]:
        from tunewise.models.feature_cache import texts_fingerprint

        vocab = sorted(self._tokenizer.get_vocab().items())
        return {"tokenizer": type(self._tokenizer).__name__, "max_length": self._max_length,
                "vocab": texts_fingerprint([f"{k}\t{v}" for k, v in vocab])}

    @torch.inference_mode()
    def predict(self, model, texts: list[str], batch_size: int = 64) -> list[int]:
        """Predicted class indices of ``texts``."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        preds: list[int] = []
        from tunewise.evaluate.batching import in_order, length_order, restore_order
        from tunewise.tasks.progress import work_progress

        order = length_order(texts)  # similar lengths share a batch: little padding
        with work_progress("classifying", len(texts)) as advance:
            for batch in self._batches(in_order(texts, order), None, batch_size):
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                preds.extend(logits.argmax(-1).tolist())
                advance(len(logits))
        preds = restore_order(preds, order)
        model.train(was_training)
        return preds if self._label_map is None else [self._label_map[p] for p in preds]

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, model, data: LabeledData[str], config: RunConfig, *, split: str = "eval") -> ClassificationResult:
        texts, labels = (data.validation, data.validation_labels) if split == "validation" else (data.eval, data.eval_labels)
        if texts is None or labels is None:
            raise TunewiseError(f"no {split} set was prepared")
        start = time.perf_counter()
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            preds = self.predict(model, texts, config.eval.batch_size)
        result = score(labels, preds, data.classes, texts, time.perf_counter() - start, config.eval.examples)
        self._after = result
        return result

    def baseline(self, model, data: LabeledData[str], config: RunConfig) -> ClassificationResult:
        """The frozen encoder with a logistic-regression head fitted on the training texts."""
        device = str(next(model.parameters()).device)
        texts, labels = _length_sorted(data.train, data.train_labels)
        batches = self._batches(texts, None, config.eval.batch_size)
        result = linear_probe_baseline(model, data.n_classes, batches, labels, config, device,
                                       lambda: self.evaluate(model, data, config))
        self._before, self._after = result, None
        return result

    def init_head(self, model, data: LabeledData[str], config: RunConfig) -> float:
        """Start from the linear probe fitted on ``data``'s training texts (as after the baseline); seconds."""
        device = str(next(model.parameters()).device)
        texts, labels = _length_sorted(data.train, data.train_labels)
        return fit_probe_into_head(model, data.n_classes, self._batches(texts, None, config.eval.batch_size),
                                   labels, config, device)

    # -- training -----------------------------------------------------------------------
    def train(self, model, data: LabeledData[str], config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, param_groups: list | None = None, **extra_args: Any) -> TrainStats:
        """Fine-tune with the transformers Trainer (dynamic padding per batch)."""
        from transformers import DataCollatorWithPadding

        def tokenize(texts: list[str], labels: list[int]) -> list[dict[str, Any]]:
            enc = self._tokenizer(texts, truncation=True, max_length=self._max_length)
            return [{**{k: v[i] for k, v in enc.items()}, "labels": label} for i, label in enumerate(labels)]

        from tunewise.data.training_rows import labeled_texts

        texts, labels, levers = labeled_texts(data.train, data.train_labels, config, model=(self._tokenizer, model))
        train_ds = tokenize(texts, labels)
        eval_ds = tokenize(data.validation, data.validation_labels) if data.validation else None
        device = str(next(model.parameters()).device)
        stats = run_trainer(model, train_ds, config, workdir=workdir, device=device,
                            collator=DataCollatorWithPadding(self._tokenizer), callbacks=callbacks,
                            eval_dataset=eval_ds, compute_metrics=compute_metrics_fn(data.n_classes),
                            param_groups=param_groups, **extra_args)
        if levers:
            stats.details["levers"] = levers
        return stats

    # -- outputs ------------------------------------------------------------------------
    def save(self, model, path: Path) -> None:
        merged = merged_for_saving(self.backbone(model))
        if merged is not None:
            self.set_backbone(model, merged)
        model.save_pretrained(str(path), safe_serialization=True)
        self._tokenizer.save_pretrained(str(path))
        write_json(Path(path) / "classification_report.json", details_file(self._before, self._after))

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: the saved classifier's labels for texts, with probabilities."""
        from tunewise.predict import Predictor, ranked_labels

        labels = head_labels(model_config(resolve_model(config.model)), "ForSequenceClassification")
        if labels is None:
            raise TunewiseError(f"model: {config.model} has no trained classification head (no id2label in config.json)")
        model = self._load(config, labels, device, None).eval()

        @torch.inference_mode()
        def apply(texts: list[str], top_k: int) -> list[dict[str, Any]]:
            batch = next(self._batches(texts, None, len(texts)))
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            return ranked_labels(logits.float().softmax(-1).cpu(), labels, top_k)

        return Predictor(columns=("text", "sentence"), apply=apply)

    def onnx_graph(self, config: RunConfig):
        """``tunewise export``: the whole classifier, text to logits (the layout of optimum's ORTModelForSequenceClassification)."""
        from tunewise.export import OnnxGraph, transformer_graph

        labels = head_labels(model_config(resolve_model(config.model)), "ForSequenceClassification")
        if labels is None:
            raise TunewiseError(f"model: {config.model} has no trained classification head (no id2label in config.json)")
        model = self._load(config, labels, "cpu", None)
        return OnnxGraph(transformer_graph(model, "logits"), self._tokenizer, "logits", "model.onnx")

    def card_info(self, data: LabeledData[str]) -> dict[str, str]:
        usage = (
            "from transformers import pipeline\n"
            "classify = pipeline(\"text-classification\", model=\"path/to/this/folder\")\n"
            "classify(\"a question\")  # [{'label': ..., 'score': ...}]"
        )
        evaluated_on = (f"{len(data.eval)} held-out texts in {data.n_classes} classes (a stratified split); "
                        "per-class precision/recall and confusion matrices are in classification_report.json")
        return {"library": "transformers", "pipeline_tag": "text-classification", "usage": usage,
                "evaluated_on": evaluated_on}
