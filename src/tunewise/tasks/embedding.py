"""Text embeddings for semantic search, trained with sentence-transformers' Trainer.

Training goes through :class:`SentenceTransformerTrainer`, so mixed precision, gradient
checkpointing and multi-GPU (``accelerate launch`` / ``torchrun``) work as they do there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from tunewise.config import RunConfig
from tunewise.data.retrieval import RetrievalData, prepare_retrieval_data
from tunewise.data.synthetic_config import check_synthetic  # registers the synthetic: section
from tunewise.errors import TunewiseError
from tunewise.evaluate.retrieval import EvalResult, evaluate_retrieval, make_trainer_evaluator, metric_names
from tunewise.models.loading import check_modality, load_sentence_transformer
from tunewise.tasks.base import TASKS, HeadSupport, MemoryProfile, TaskSpec, TrainStats
from tunewise.tasks.embedding_losses import LOSSES, rows_for_loss
from tunewise.tasks.progress import quiet_progress
from tunewise.tasks.training import (
    common_training_kwargs,
    early_stopping,
    early_stopping_callback,
    early_stopping_record,
    stopping_metric,
    train_resumable,
)


def training_arguments(config: RunConfig, workdir: Path, device: str, *, in_batch_negatives: bool, evaluate: bool, **extra: Any):
    """SentenceTransformerTrainingArguments from a run config (shared by the budget planner).

    Early stopping watches the validation evaluator's primary metric (``eval_val_<primary>``).
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    from tunewise.tasks.length_batches import batch_sampler

    watched = f"eval_val_{stopping_metric(config)[0]}" if early_stopping(config) else None
    kwargs: dict[str, Any] = dict(
        **common_training_kwargs(config, workdir, device, best_metric=watched, evaluate=evaluate),
        batch_sampler=batch_sampler(in_batch_negatives=in_batch_negatives, group_by_length=config.train.group_by_length),
    )
    kwargs.update(extra)
    return SentenceTransformerTrainingArguments(**kwargs)


@TASKS.register("embedding")
class EmbeddingTask:
    """Fine-tune a text encoder so that queries retrieve their answers."""

    spec = TaskSpec(
        name="embedding", summary="text search: queries retrieve their answers (sentence-transformers)",
        unit="pairs", primary="mrr@20",
        head=HeadSupport("pooled-text", losses=("mnrl", "cached_mnrl")),
        memory=MemoryProfile(step="contrastive", sequence="texts", arch_from="path"),
        general_domain="text-pairs", levers=("synthetic", "hard_negatives", "augment"),
    )

    def check_config(self, config: RunConfig) -> None:
        LOSSES.get(config.train.loss)
        metric_names(config.eval)
        check_modality(config.model, "text", task=self.spec.name)  # a vision backbone: refused before any work
        check_synthetic(config)  # data.unlabeled readable, the generator a causal LM or seq2seq model

    def prepare_data(self, config: RunConfig) -> RetrievalData:
        self.check_config(config)  # an unknown loss fails before reading data
        return prepare_retrieval_data(config.data, config.seed, need_validation=early_stopping(config))

    def folds(self, config: RunConfig, k: int):
        """k-fold splits (``--folds``): a query, its answers and every query sharing one stay on one side."""
        from tunewise.data.folds import retrieval_folds

        self.check_config(config)
        return retrieval_folds(config, k)

    def data_report(self, data: RetrievalData) -> dict[str, Any]:
        return data.report

    def n_train(self, data: RetrievalData) -> int:
        return len(data.train)

    def subset(self, data: RetrievalData, indices: list[int]) -> RetrievalData:
        report = {**data.report, "train_examples": len(indices)}
        return dataclasses.replace(data, train=[data.train[i] for i in indices], report=report,
                                   pool=data.pool if data.pool is not None else data.train)

    def load_model(self, config: RunConfig, device: str):
        return load_sentence_transformer(config.model, device=device, max_seq_length=config.train.max_seq_length)

    def modules(self, model):
        return model

    # Strategy hooks (tunewise.strategies): where the pre-trained network and a new head sit.

    def backbone(self, model):
        """The transformers model inside the first module (what layers/LoRA act on)."""
        inner = getattr(model[0], "model", None)
        return inner if isinstance(inner, torch.nn.Module) else model

    def set_backbone(self, model, backbone) -> None:
        model[0].model = backbone

    def head_modules(self, model) -> list:
        """Heads added by tunewise (``add_head``); a loaded model's own layers count as backbone."""
        return [m for m in model if getattr(m, "tunewise_new_head", False)]

    def add_head(self, model, dim: int | None, activation: str = "identity"):
        """Append a Dense projection (+ Normalize) after pooling; ``SentenceTransformer(path)`` loads it.

        Square heads start as the identity (training starts from the pre-trained model); others
        start semi-orthogonal, which keeps cosine geometry as well as a projection can.
        """
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize

        in_dim = model.get_embedding_dimension()
        out_dim = dim or in_dim
        weight = torch.empty(out_dim, in_dim)
        if out_dim == in_dim:
            torch.nn.init.eye_(weight)
        else:
            torch.nn.init.orthogonal_(weight, generator=torch.Generator().manual_seed(0))  # same head every run
        act = torch.nn.Tanh() if activation == "tanh" else None
        dense = Dense(in_dim, out_dim, bias=True, activation_function=act, init_weight=weight,
                      init_bias=torch.zeros(out_dim))
        for module in (dense, Normalize()):
            module.tunewise_new_head = True
            model.append(module.to(model.device))
        return model

    def evaluate(self, model, data: RetrievalData, config: RunConfig, *, split: str = "eval") -> EvalResult:
        dataset = data.validation if split == "validation" else data.eval
        if dataset is None:
            raise TunewiseError(f"no {split} set was prepared")
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            return evaluate_retrieval(model, dataset, config.eval)

    def train(self, model, data: RetrievalData, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, evaluator=None, param_groups: list[dict] | None = None,
              **extra_args: Any) -> TrainStats:
        """Train ``model`` in place; returns seconds, throughput and evaluations made during training.

        Args:
            evaluator: a sentence-transformers evaluator called every epoch (budget planner's
                time curve); early stopping makes one on the validation set.
            param_groups: optimizer param groups with their own ``lr`` (strategy learning-rate
                options); the Trainer's optimizer class and schedule are kept.
            extra_args: more SentenceTransformerTrainingArguments (e.g. ``eval_steps``).
        """
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer

        from tunewise.data.training_rows import search_rows

        spec = LOSSES.get(config.train.loss)
        train_rows, levers = search_rows(data.train, data, config, model)
        rows = rows_for_loss(spec, config.train.loss, train_rows, config.train, config.seed)
        loss = spec.build(model, config.train)
        callbacks = list(callbacks or [])
        if early_stopping(config):
            evaluator = make_trainer_evaluator(data.validation, config.eval, name="val")
            callbacks += early_stopping_callback(config)
        device = str(model.device)
        args = training_arguments(config, workdir, device, in_batch_negatives=spec.in_batch_negatives,
                                  evaluate=evaluator is not None, **extra_args)
        logging.getLogger("sentence_transformers.base.trainer").setLevel(logging.ERROR)
        optimizers = (None, None)
        if param_groups:
            from transformers import Trainer

            # the Trainer's own choice of optimizer class (args.optim), with the strategy's groups
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
            optimizers = (optimizer_cls(param_groups, **optimizer_kwargs), None)
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), loss=loss,
            evaluator=evaluator, callbacks=callbacks, optimizers=optimizers,
        )
        quiet_progress(trainer)
        start = time.perf_counter()
        output = train_resumable(trainer, config, workdir)
        wall = time.perf_counter() - start
        history = list(getattr(evaluator, "history", []))
        eval_seconds = sum(h.get("eval_seconds", 0.0) for h in history)
        seconds = max(wall - eval_seconds, 1e-9)  # training only: evaluations are reported apart
        epochs = float(output.metrics.get("epoch", config.train.epochs))
        stats = TrainStats(
            seconds=seconds,
            examples=len(rows),
            steps=int(output.global_step),
            epochs=epochs,
            samples_per_second=len(rows) * epochs / seconds,
            history=history,
            details={"levers": levers} if levers else {},
        )
        stats.best = early_stopping_record(trainer, config, stopping_metric(config)[0]) if early_stopping(config) else None
        return stats

    def chance(self, data: RetrievalData, config: RunConfig) -> dict[str, float]:
        """Expected scores of a random ranking of this evaluation corpus."""
        from tunewise.evaluate.chance import ranking_chance

        relevant = [sum(1 for grade in rel.values() if grade > 0) for rel in data.eval.qrels.values()]
        levels = {}
        for name in metric_names(config.eval):
            metric, _, k = name.partition("@")
            value = ranking_chance(metric, int(k), len(data.eval.corpus), relevant) if k.isdigit() else None
            if value is not None:
                levels[name] = value
        return levels

    def save(self, model, path: Path) -> None:
        model.save(str(path), safe_serialization=True, create_model_card=False)
        self._library_card = library_card(model)


    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: the saved encoder embeds texts (with a corpus: searches it)."""
        from tunewise.predict import Predictor

        model = self.load_model(config, device)
        return Predictor(columns=("text", "query", "sentence"), encode=lambda texts: model.encode(
            texts, batch_size=len(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False))

    def onnx_graph(self, config: RunConfig):
        """``tunewise export``: the transformer inside the encoder; pooling and heads stay sentence-transformers
        modules (the layout of its ONNX backend)."""
        from tunewise.export import OnnxGraph, transformer_graph

        model = self.load_model(config, "cpu")
        return OnnxGraph(transformer_graph(self.backbone(model), "last_hidden_state"), model.tokenizer, "last_hidden_state",
                         "onnx/model.onnx", sequence_output=True)

    def card_info(self, data: RetrievalData) -> dict[str, str]:
        """What the model card says about this task's model and evaluation."""
        usage = (
            "from sentence_transformers import SentenceTransformer\n"
            "model = SentenceTransformer(\"path/to/this/folder\")\n"
            "embeddings = model.encode([\"a question\", \"an answer\"], normalize_embeddings=True)"
        )
        evaluated_on = (f"{len(data.eval.queries)} held-out queries searched against "
                        f"{len(data.eval.corpus)} documents")
        return {"library": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                "usage": usage, "evaluated_on": evaluated_on, "train_keys": ("loss",),
                "library_card": getattr(self, "_library_card", None)}  # merged into tunewise's card (outputs.model_card)


def library_card(model) -> str | None:
    """The card sentence-transformers itself writes for ``model`` (architecture, dimensions, training details),
    generated without looking anything up on the Hub; None where the library cannot make one."""
    from sentence_transformers.base.model_card import generate_model_card

    model.model_card_data.local_files_only = True
    try:
        return generate_model_card(model)
    except Exception:  # the library logs and skips its card on any failure; so does tunewise
        return None

