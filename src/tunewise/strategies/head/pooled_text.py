"""``head`` over ``pooled-text`` features: sentence embeddings of a frozen SentenceTransformer body.

The task appends the head (``CanAddHead``: a ``Dense`` + ``Normalize`` after pooling, so the
saved model loads with ``SentenceTransformer(path)``). The body's outputs for every training
text are cached, keyed by the body's weights, its modules' configs, the tokenizer vocabulary
and the sequence length. The head is a linear projection (identity-initialised when the output
dimension equals the input, so training starts from the pre-trained model; semi-orthogonal
otherwise) trained with the in-batch-negatives ranking loss (Henderson et al. 2017,
arXiv:1705.00652): cross-entropy over scaled cosine similarities, as sentence-transformers'
MultipleNegativesRankingLoss computes it. Evaluation reads the body's outputs from the same
cache (:class:`CachedHeadEncoder`), so it runs the backbone only over texts never seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.models.feature_cache import cached_features, fingerprint, texts_fingerprint, weights_fingerprint
from tunewise.strategies.head.training import FeatureKind, torch_threads, train_cached_head
from tunewise.tasks.base import TrainStats


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

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, **negatives: torch.Tensor):
        # negatives: ``negative`` (triplets data) or ``negative_1..n`` (mined, tunewise.data.hard_negatives)
        a = self.embed(anchor)
        candidates = self.embed(positive)  # in-batch negatives: every other positive
        if negatives:
            candidates = torch.cat([candidates, *(self.embed(rows) for rows in negatives.values())])
        scores = self.scale * a @ candidates.T  # (batch, batch * (1 + negatives))
        loss = nn.functional.cross_entropy(scores, torch.arange(len(a), device=a.device))
        return {"loss": loss}


def train_embedding_head(model, task: Any, data, options: Any, config: RunConfig, *, workdir: Path,
                         callbacks: list | None = None, validate: Any = None) -> TrainStats:
    """Cache the body's outputs for every training text, then train the head with the Trainer."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from tunewise.data.hard_negatives import negative_columns
    from tunewise.data.training_rows import search_rows

    rows, levers = search_rows(data.train, data, config, model)
    roles = [r for r in ("anchor", "positive") if rows and r in rows[0]] + (negative_columns(rows[0]) if rows else [])
    texts = sorted({r[role] for r in rows for role in roles})
    index = {t: i for i, t in enumerate(texts)}
    key = features_key(model)
    batch = config.eval.batch_size
    cache = cached_features(key, texts, lambda todo: encode_body(model, todo, batch), use_cache=options.cache)
    _, head = body_and_head(model)
    module = HeadOverFeatures(head, cache.features, options.scale)
    dataset = Dataset.from_dict({role: [index[r[role]] for r in rows] for role in roles})

    device = str(model.device)
    threads = torch.get_num_threads()

    class ReEncode(TrainerCallback):
        """cache: false (benchmarks): each epoch after the first re-runs the backbone, inside its timing."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            if state.epoch and state.epoch >= 1:
                from tunewise.precision import evaluation_autocast

                # the backbone gets the threads and the precision it had for the first epoch
                with torch_threads(threads), evaluation_autocast(config, model):
                    module.features = encode_body(model, texts, batch).to(module.features.device)

    extra = [] if options.cache else [ReEncode()]
    stats = train_cached_head(module, dataset, cache, key, options, config, device=device, workdir=workdir,
                              callbacks=[*extra, *(callbacks or [])], examples=len(rows), inputs={"texts": len(texts)}, validate=validate)
    model.to(device)
    if levers:
        stats.details["levers"] = levers
    return stats


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


def _eval_model(model, options: Any) -> Any:
    return CachedHeadEncoder(model) if options.cache else model


def _share_body(model) -> Any:
    """A new SentenceTransformer over the same (frozen, never changed) modules: the head is added fresh."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=list(model), device=str(model.device))


KIND = FeatureKind(train=train_embedding_head, adds_head=True, eval_model=_eval_model, reuse_pretrained=_share_body)
