"""``contrastive``: few-shot classification by the SetFit recipe, saved as a plain classifier.

Two stages (Tunstall et al. 2022): the body is fine-tuned contrastively on pairs sampled from
the labeled items (same label: similarity 1, different labels: 0; ``num_iterations`` positive
and as many negative pairs per item, one pass, sentence-transformers' ``CosineSimilarityLoss``
or ``ContrastiveLoss`` through its ``SentenceTransformerTrainer``), then a logistic regression
is fitted on the tuned features. With a handful of items per class, pairs give the body
``O(n^2)`` training signals where cross-entropy gets ``n``.

The ``setfit`` library itself does not fit tunewise: its evaluation loads metrics from the
hub (fails offline), it logs to every installed tracker by default, and it saves the head
with pickle. The recipe is two ecosystem calls, so it is built from them here instead.

The features that train are the ones the classifier's final linear layer sees (for BERT: the
pooler over [CLS]; :class:`HeadInputEncoder` exposes them to sentence-transformers through a
forward hook on that layer). The fitted logistic regression is then written into that layer
exactly (:func:`tunewise.tasks.classifier_shared.fit_probe_into_head`), so the saved folder is
the task's ordinary ``AutoModelForSequenceClassification`` (``pipeline("text-classification")``,
``tunewise predict``/``evaluate``/``export``) and predicts what the trained model predicted.

References: Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts" (SetFit,
arXiv:2209.11055); Hadsell et al. 2006 (contrastive loss).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import STRATEGIES, head_modules_of
from tunewise.tasks.base import TASKS, TrainStats

LOSSES = ("cosine", "contrastive")
# SetFit's body learning rate (setfit.TrainingArguments.body_learning_rate): pairs of a few
# items are easy to overfit, so the step is smaller than full fine-tuning's 5e-5.
SETFIT_LR = 2e-5


@dataclass
class ContrastiveOptions:
    """SetFit-style few-shot training: contrastive pairs for the body, then a logistic-regression head."""

    num_iterations: int = field(default=20, metadata={"help": "Pairs per labeled item: this many positive and as many "
        "negative pairs, trained in one pass (SetFit's num_iterations; train.epochs is not used)."})
    pair_loss: str = field(default="cosine", metadata={"help": "cosine (CosineSimilarityLoss, SetFit's default) or "
        "contrastive (ContrastiveLoss, a margin on different-label pairs)."})

    def __post_init__(self) -> None:
        if self.num_iterations < 1:
            raise TunewiseError(f"strategy.num_iterations: must be at least 1 (pairs per item; SetFit uses 20), got {self.num_iterations}")
        if self.pair_loss not in LOSSES:
            raise TunewiseError(f"strategy.pair_loss: use {' or '.join(LOSSES)}, got '{self.pair_loss}'")


def sample_pairs(labels: Sequence[int], num_iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """Balanced, seeded pairs of item indices: per iteration and item, one same-label and one
    other-label partner.

    An item alone in its class is paired with itself (as SetFit does); every other positive
    partner is a different item.

    Args:
        labels: class index per item.
        num_iterations: rounds over the items; ``2 * num_iterations * len(labels)`` pairs in all.
        seed: the random generator's seed.

    Returns:
        ``(i, j, similarity)`` with similarity 1.0 (same label) or 0.0.

    Raises:
        TunewiseError: fewer than two classes among the labels (no negative pairs).
    """
    import numpy as np

    y = np.asarray(list(labels))
    if len(np.unique(y)) < 2:
        raise TunewiseError("strategy contrastive: the training items hold fewer than two classes; it needs pairs of different labels")
    rng = np.random.default_rng(seed)
    same = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    other = {c: np.flatnonzero(y != c) for c in np.unique(y)}
    pairs: list[tuple[int, int, float]] = []
    for _ in range(num_iterations):
        for i, c in enumerate(y):
            mates = same[c][same[c] != i]
            j = int(rng.choice(mates)) if len(mates) else i
            pairs.append((i, j, 1.0))
            pairs.append((i, int(rng.choice(other[c])), 0.0))
    return pairs


def _input_module():
    from sentence_transformers.base.modules.input_module import InputModule

    return InputModule


def head_input_encoder(model: torch.nn.Module, task: Any, head: torch.nn.Linear):
    """A SentenceTransformer whose embedding of an input is what ``head`` (the classifier's final
    layer) sees for it, computed by ``model`` itself: its losses train the classifier's own body."""
    from sentence_transformers import SentenceTransformer

    class HeadInputEncoder(_input_module()):
        """Inputs -> the task's model batches -> the classifier's forward pass, read at its head."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model  # shared, not copied: training here trains the classifier

        def preprocess(self, inputs, prompt=None, **kwargs) -> dict[str, Any]:
            return next(iter(task.feature_batches(list(inputs), max(1, len(inputs)))))

        def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
            captured: list[torch.Tensor] = []
            hook = head.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
            try:
                self.model(**{k: v for k, v in features.items() if k not in ("sentence_embedding", "labels")})
            finally:
                hook.remove()
            features["sentence_embedding"] = captured[-1].reshape(captured[-1].shape[0], -1)  # (batch, in_features)
            return features

        def save(self, output_path: str, *args, **kwargs) -> None:  # the task saves the classifier
            raise RuntimeError("internal: the pair-training encoder has no files of its own; the contrastive strategy saves "
                               "the classifier through the task")

    return SentenceTransformer(modules=[HeadInputEncoder()], device=str(next(model.parameters()).device))


def _loss(encoder: Any, name: str):
    from sentence_transformers.sentence_transformer import losses

    return losses.CosineSimilarityLoss(encoder) if name == "cosine" else losses.ContrastiveLoss(encoder)


def train_pairs(model: torch.nn.Module, task: Any, head: torch.nn.Linear, texts: Sequence[Any], labels: Sequence[int],
                options: ContrastiveOptions, config: RunConfig, *, workdir: Path, callbacks: list | None = None) -> tuple[int, int, list[float]]:
    """Stage one: the body trains on sampled pairs, one pass; (pairs, steps, logged losses)."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from tunewise.tasks.progress import quiet_progress
    from tunewise.tasks.training import common_training_kwargs

    pairs = sample_pairs(labels, options.num_iterations, config.seed)
    dataset = Dataset.from_dict({"sentence1": [texts[i] for i, _, _ in pairs], "sentence2": [texts[j] for _, j, _ in pairs],
                                 "label": [s for _, _, s in pairs]})
    encoder = head_input_encoder(model, task, head)
    device = str(next(model.parameters()).device)
    kwargs = common_training_kwargs(config, workdir, device)
    kwargs.update(num_train_epochs=1, logging_strategy="steps", logging_steps=max(1, len(pairs) // config.train.batch_size // 10),
                  save_strategy="no", eval_strategy="no", load_best_model_at_end=False, disable_tqdm=True)
    args = SentenceTransformerTrainingArguments(**kwargs)

    class PairTrainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """No sentence-transformers model card (it encodes widget examples): the classifier is saved with tunewise's."""

    trainer = PairTrainer(model=encoder, args=args, train_dataset=dataset, loss=_loss(encoder, options.pair_loss),
                                         callbacks=list(callbacks or []))
    quiet_progress(trainer)
    output = trainer.train()
    losses = [round(float(h["loss"]), 5) for h in trainer.state.log_history if "loss" in h]
    return len(pairs), int(output.global_step), losses


def check_contrastive(options: ContrastiveOptions, config: RunConfig) -> None:
    """Only classifiers with the logistic-regression head fit (``classifier-inputs`` head features);
    no validation metric during the pairs pass, so no early stopping."""
    task = TASKS.get(config.task)
    support = task.spec.head
    if support is None or support.features != "classifier-inputs" or not hasattr(task, "feature_batches"):
        raise TunewiseError(f"strategy contrastive: trains a classifier's features and head; task '{config.task}' has "
                            "none (use strategy: full)")
    if config.train.early_stopping_patience is not None:
        raise TunewiseError("train.early_stopping_patience: strategy contrastive trains one pass over sampled pairs "
                            "with no validation metric; leave it out (more or fewer pairs: strategy.num_iterations)")


@STRATEGIES.register("contrastive")
class ContrastiveStrategy:
    name = "contrastive"
    default_learning_rate = SETFIT_LR  # train.learning_rate when the config leaves it empty
    options = ContrastiveOptions
    check = staticmethod(check_contrastive)

    @staticmethod
    def prepare(model: Any, task: Any, options: ContrastiveOptions, config: RunConfig) -> Any:
        for p in task.modules(model).parameters():
            p.requires_grad_(True)
        return model

    @staticmethod
    def train(model: Any, task: Any, data: Any, options: ContrastiveOptions, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None) -> TrainStats:
        """Pairs for the body, then the logistic-regression head written into the classifier's final layer."""
        from tunewise.data.training_rows import labeled_texts
        from tunewise.tasks.classifier_shared import fit_probe_into_head

        texts, labels, levers = labeled_texts(data.train, data.train_labels, config)
        (head,) = head_modules_of(task, model)
        start = time.perf_counter()
        n_pairs, steps, losses = train_pairs(model, task, head, texts, labels, options, config, workdir=workdir, callbacks=callbacks)
        pairs_seconds = time.perf_counter() - start
        device = str(next(model.parameters()).device)
        head_seconds = fit_probe_into_head(model, data.n_classes, task.feature_batches(list(texts), config.eval.batch_size),
                                           labels, config, device)
        seconds = time.perf_counter() - start
        details: dict[str, Any] = {"pairs": n_pairs, "pairs_seconds": round(pairs_seconds, 3),
                                   "head_seconds": round(head_seconds, 3), "pair_losses": losses,
                                   "head": "logistic regression on the tuned head inputs (classify.baseline_c)"}
        if levers:
            details["levers"] = levers
        return TrainStats(seconds=seconds, examples=len(texts), steps=steps, epochs=1.0,
                          samples_per_second=n_pairs / max(pairs_seconds, 1e-9), details=details, history=[{"train_loss_per_step": losses}])
