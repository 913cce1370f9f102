"""``head``: the backbone stays frozen; only a new head trains, on cached backbone outputs.

Transfer learning in its cheapest form: the pre-trained model is a fixed feature extractor.
Because the backbone never changes, its outputs for the training texts are computed once and
cached on disk (:mod:`tunewise.strategies.feature_cache`, keyed by weights, preprocessing and
data), so the epochs after the first, and later runs on the same data, never run it again.
The head then trains with the transformers ``Trainer`` on a tiny module over the cached
features. The saved model is backbone + head and loads with the ecosystem's own loader
(for embeddings: ``SentenceTransformer(path)``, the head being a ``Dense`` + ``Normalize``).

For text embeddings the head is a linear projection (identity-initialised when the output
dimension equals the input, so training starts from the pre-trained model; semi-orthogonal
otherwise) trained with the in-batch-negatives ranking loss (Henderson et al. 2017,
arXiv:1705.00652): cross-entropy over scaled cosine similarities, as sentence-transformers'
MultipleNegativesRankingLoss computes it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import DEFAULT_LR, STRATEGIES
from tunewise.strategies.feature_cache import cached_features, fingerprint, texts_fingerprint, weights_fingerprint
from tunewise.tasks.base import TrainStats

_HEAD_LOSSES = ("mnrl", "cached_mnrl")


@dataclass
class HeadOptions:
    """A new trainable head over a frozen, cached backbone."""

    dim: int | None = field(default=None, metadata={"help": "Output dimension of the head (default: the backbone's)."})
    activation: str = field(default="identity", metadata={"help": "identity (a linear projection) or tanh."})
    head_lr: float = field(default=1e-3, metadata={"help": "Learning rate of the head (a fresh layer wants more than a backbone)."})
    scale: float = field(default=20.0, metadata={"help": "Ranking loss: similarity scale (inverse temperature)."})
    cache: bool = field(default=True, metadata={"help": "Cache backbone outputs on disk; false re-runs the backbone every epoch (benchmarks)."})

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim < 1:
            raise TunewiseError(f"strategy.dim: must be at least 1, got {self.dim}")
        if self.activation not in ("identity", "tanh"):
            raise TunewiseError(f"strategy.activation: use identity or tanh, got '{self.activation}'")
        if self.head_lr <= 0:
            raise TunewiseError(f"strategy.head_lr: must be positive, got {self.head_lr}")
        if self.scale <= 0:
            raise TunewiseError(f"strategy.scale: must be positive, got {self.scale}")


@dataclass
class HeadTrainStats(TrainStats):
    """TrainStats plus what the feature cache did (goes to metrics.json under strategy.details)."""

    details: dict[str, Any] = field(default_factory=dict)


CLASSIFIER_TASKS = ("classification", "image-classification")


# task -> (the head options it refuses, why); text search takes them all
_REFUSED_OPTIONS = {
    "classification": (("dim", "activation"), "a classifier's head is its final linear layer (one output per class)"),
    "image-classification": (("dim", "activation"), "a classifier's head is its final linear layer (one output per class)"),
    "image-search": (("activation",), "image search trains a linear projection"),
    "clip": (("dim", "activation"), "CLIP's heads are its two projections into the shared space"),
}


def check_head(options: HeadOptions, config: RunConfig) -> None:
    if config.task == "causal_lm":
        raise TunewiseError("strategy head: a causal LM's head is its vocabulary projection, tied to the input "
                            "embeddings in small LLMs, so no frozen backbone output can be cached; use lora "
                            "(default), qlora, partial or full")
    if config.task != "embedding" and config.task not in _REFUSED_OPTIONS:
        raise TunewiseError(f"strategy head: not available for task '{config.task}'; use strategy: partial or full")
    refused, why = _REFUSED_OPTIONS.get(config.task, ((), ""))
    given = {"dim": options.dim is not None, "activation": options.activation != "identity"}
    for name in refused:
        if given[name]:
            raise TunewiseError(f"strategy.{name}: {why}; drop strategy.{name}")
    if config.task == "embedding" and config.train.loss not in _HEAD_LOSSES:
        raise TunewiseError(f"train.loss: strategy head trains on cached features with mnrl; '{config.train.loss}' "
                            "is not supported there (use train.loss: mnrl or strategy: partial)")
    if config.train.early_stopping_patience is not None:
        raise TunewiseError("train.early_stopping_patience: not supported with strategy head; leave it out")


# ---------------------------------------------------------------------------------------
# sentence-transformers specifics


def body_and_head(model) -> tuple[list, list]:
    """Split a SentenceTransformer into the frozen body and the new head modules."""
    modules = list(model)
    head = [m for m in modules if getattr(m, "tunewise_new_head", False)]
    return [m for m in modules if not getattr(m, "tunewise_new_head", False)], head


def features_key(model) -> str:
    """Fingerprint of the body's weights and its preprocessing (rows are keyed by text inside)."""
    body, _ = body_and_head(model)
    pre = []
    for m in body:
        cfg = m.get_config_dict() if hasattr(m, "get_config_dict") else {}
        pre.append({"type": type(m).__name__, "config": cfg})
    tokenizer = getattr(model, "tokenizer", None)
    vocab = sorted(tokenizer.get_vocab().items()) if tokenizer is not None and hasattr(tokenizer, "get_vocab") else []
    weights = weights_fingerprint(nn.ModuleList(body))
    return fingerprint(weights=weights, preprocessing=pre, max_seq_length=model.max_seq_length,
                       vocab=texts_fingerprint([f"{k}\t{v}" for k, v in vocab]))


def encode_body(model, texts: list[str], batch_size: int) -> torch.Tensor:
    """Body outputs (n_texts, dim) for ``texts``: the pre-trained pipeline without the new head."""
    from sentence_transformers import SentenceTransformer

    body, _ = body_and_head(model)
    extractor = SentenceTransformer(modules=body, device=str(model.device))
    extractor.max_seq_length = model.max_seq_length
    with torch.inference_mode():
        return extractor.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                normalize_embeddings=False, show_progress_bar=False).float().cpu().clone()


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _single_thread(device: str) -> Iterator[None]:
    """One intra-op thread on CPU: the head's matmuls are tiny, and thread hand-offs cost more than
    they save (measured 20x slower steps with 2 threads on a loaded 2-core machine)."""
    if device.startswith("cuda"):
        yield
        return
    with _threads(1):
        yield


class HeadOverFeatures(nn.Module):
    """The head applied to cached features, with the ranking loss: what the Trainer trains.

    Inputs are row indices into ``features`` (n_texts, dim); nothing else runs per step.
    """

    def __init__(self, head: list, features: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.head = nn.ModuleList(head)
        self.register_buffer("features", features, persistent=False)
        self.scale = scale

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        out = {"sentence_embedding": self.features[rows]}  # (batch, dim_in)
        for module in self.head:
            out = module(out)
        return nn.functional.normalize(out["sentence_embedding"], dim=-1)  # (batch, dim_out)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None):
        a = self.embed(anchor)
        candidates = self.embed(positive)  # in-batch negatives: every other positive
        if negative is not None:
            candidates = torch.cat([candidates, self.embed(negative)])
        scores = self.scale * a @ candidates.T  # (batch, batch[ * 2])
        loss = nn.functional.cross_entropy(scores, torch.arange(len(a), device=a.device))
        return {"loss": loss}


def train_embedding_head(model, data, options: HeadOptions, config: RunConfig, *, workdir: Path,
                         callbacks: list | None = None) -> HeadTrainStats:
    """Cache the body's outputs for every training text, then train the head with the Trainer."""
    from datasets import Dataset
    from transformers import TrainerCallback

    rows = data.train
    roles = [r for r in ("anchor", "positive", "negative") if rows and r in rows[0]]
    texts = sorted({r[role] for r in rows for role in roles})
    index = {t: i for i, t in enumerate(texts)}
    key = features_key(model)
    batch = config.eval.batch_size
    cache = cached_features(key, texts, lambda todo: encode_body(model, todo, batch), use_cache=options.cache)
    _, head = body_and_head(model)
    module = HeadOverFeatures(head, cache.features, options.scale)
    dataset = Dataset.from_dict({role: [index[r[role]] for r in rows] for role in roles})

    epoch_seconds: list[float] = []
    device = str(model.device)
    threads = torch.get_num_threads()

    class ReEncode(TrainerCallback):
        """cache: false (benchmarks): each epoch after the first re-runs the backbone, inside its timing."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            if state.epoch and state.epoch >= 1:
                with _threads(threads):  # the backbone gets the threads it normally has
                    module.features = encode_body(model, texts, batch).to(module.features.device)

    extra = [] if options.cache else [ReEncode()]
    trainer, output, train_seconds = train_head_module(module, dataset, options, config, device=device, workdir=workdir,
                                                       epoch_seconds=epoch_seconds, callbacks=[*extra, *(callbacks or [])])
    model.to(device)
    return head_train_stats(cache, key, options, trainer, output, train_seconds, epoch_seconds, config,
                            examples=len(rows), inputs={"texts": len(texts)})


def _epoch_timer(seconds: list[float]):
    """A TrainerCallback appending each epoch's wall seconds to ``seconds``."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def train_head_module(module: nn.Module, dataset: Any, options: Any, config: RunConfig, *, device: str, workdir: Path,
                      epoch_seconds: list[float], callbacks: list | None = None, collator: Any = None):
    """Train a head-over-cached-features module with the transformers Trainer; (trainer, output, seconds).

    One intra-op thread on CPU (see :func:`_single_thread`); each epoch's wall time goes to
    ``epoch_seconds`` (callbacks run inside it).
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(workdir), num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
        learning_rate=options.head_lr, warmup_steps=config.train.warmup_ratio, weight_decay=config.train.weight_decay,
        seed=config.seed, data_seed=config.seed, logging_strategy="epoch", report_to="none", save_strategy="no",
        use_cpu=not device.startswith("cuda"), dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    trainer = Trainer(model=module, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[_epoch_timer(epoch_seconds), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # no raw log dicts on the console
    start = time.perf_counter()
    with _single_thread(device):
        output = trainer.train()
    return trainer, output, time.perf_counter() - start


def head_train_stats(cache, key: str, options: Any, trainer: Any, output: Any, train_seconds: float,
                     epoch_seconds: list[float], config: RunConfig, *, examples: int, inputs: dict[str, int]) -> HeadTrainStats:
    """TrainStats of a head trained on cached features, with what the cache did per epoch."""
    seconds = cache.seconds + train_seconds
    epochs = float(output.metrics.get("epoch", config.train.epochs))
    later = epoch_seconds[1:]
    details = {
        "feature_cache": {"status": cache.status, "path": str(cache.path) if options.cache else None,
                          "fingerprint": key, **inputs, "encoded": cache.encoded,
                          "build_seconds": round(cache.seconds, 4)},
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "epoch_losses": [round(float(h["loss"]), 5) for h in trainer.state.log_history if "loss" in h],
        "first_epoch_seconds": round(cache.seconds + (epoch_seconds[0] if epoch_seconds else 0.0), 4),
        "later_epoch_seconds_mean": round(sum(later) / len(later), 5) if later else None,
    }
    return HeadTrainStats(seconds=seconds, examples=examples, steps=int(output.global_step), epochs=epochs,
                          samples_per_second=examples * epochs / max(seconds, 1e-9), details=details)


class CachedHeadEncoder:
    """``encode`` like the SentenceTransformer it wraps, with the frozen body's outputs read from
    the feature cache: evaluating a head model runs the backbone only over texts never seen."""

    def __init__(self, model) -> None:
        self.model = model
        self.key = features_key(model)
        self.status: list[str] = []

    def encode(self, sentences, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_tensor: bool = False, normalize_embeddings: bool = False, **_: Any):
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        cache = cached_features(self.key, texts, lambda todo: encode_body(self.model, todo, batch_size))
        self.status.append(cache.status)
        _, head = body_and_head(self.model)
        with torch.inference_mode():
            out = {"sentence_embedding": cache.features.to(self.model.device)}
            for module in head:
                out = module(out)
            emb = out["sentence_embedding"]
            if normalize_embeddings:
                emb = nn.functional.normalize(emb, dim=-1)
        emb = emb if convert_to_tensor else emb.cpu().numpy()
        return emb[0] if isinstance(sentences, str) else emb


# ---------------------------------------------------------------------------------------


@STRATEGIES.register("head")
class HeadStrategy:
    name = "head"
    default_learning_rate = DEFAULT_LR  # train.learning_rate when the config leaves it empty
    options = HeadOptions

    @staticmethod
    def reuse_pretrained(model: Any, task: Any, config: RunConfig) -> Any:
        """A fresh model for another budget-sweep point from one loaded once: the frozen body is
        shared (it never changes), the head is new. Classifiers train their own head: a copy."""
        if config.task == "embedding":
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(modules=list(model), device=str(model.device))
        import copy

        return copy.deepcopy(model)
    check = staticmethod(check_head)

    @staticmethod
    def prepare(model: Any, task: Any, options: HeadOptions, config: RunConfig) -> Any:
        for p in task.modules(model).parameters():
            p.requires_grad_(False)
        if config.task not in (*CLASSIFIER_TASKS, "clip"):  # classifiers and CLIP have their heads
            model = task.add_head(model, options.dim, activation=options.activation)
        for m in task.head_modules(model):
            for p in m.parameters():
                p.requires_grad_(True)
        return model

    @staticmethod
    def train(model: Any, task: Any, data: Any, options: HeadOptions, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None) -> HeadTrainStats:
        if config.task in CLASSIFIER_TASKS:
            from tunewise.strategies.head_tasks import train_classifier_head

            return train_classifier_head(model, task, data, options, config, workdir=workdir, callbacks=callbacks)
        if config.task == "clip":
            from tunewise.strategies.head_tasks import train_clip_head

            return train_clip_head(model, task, data, options, config, workdir=workdir, callbacks=callbacks)
        if config.task == "image-search":
            from tunewise.strategies.head_tasks import train_image_search_head

            return train_image_search_head(model, task, data, options, config, workdir=workdir, callbacks=callbacks)
        return train_embedding_head(model, data, options, config, workdir=workdir, callbacks=callbacks)

    @staticmethod
    def eval_model(model: Any, task: Any, options: HeadOptions, config: RunConfig) -> Any:
        """What evaluation encodes with: the model, its body's outputs read from the feature cache."""
        return CachedHeadEncoder(model) if options.cache and config.task == "embedding" else model
