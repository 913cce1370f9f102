"""Cached outputs of an encoder's frozen lower layers: strategy ``partial``'s speed path.

With the embeddings and the bottom N blocks frozen, their output for a given token sequence
never changes during fine-tuning. :class:`FrozenLayerCache` computes it once per distinct
sequence, keeps it in memory and on disk (:func:`tunewise.models.feature_cache.save_sequences`,
half precision, keyed by the frozen weights, N, the maximum length, the precision they ran at
and the storage dtype; rows by the SHA-256 of the token ids), and while :meth:`FrozenLayerCache.active`
is entered the encoder's forward starts at block N+1 from the cached states. Training, the
evaluation before and after, and every budget point share it, so the frozen part of each text
runs once.

It works on the model object in place and only inside the ``with`` block: the embeddings
module returns the cached states and the frozen blocks pass their input through; the model's
own forward (attention masks, the upper blocks, the pooler) is untouched, and what is saved is
the ordinary model. Outputs equal the uncached forward in eval mode up to the storage dtype's
rounding (fp16: ~1e-3 relative; ``storage=torch.float32`` is exact). In training the frozen
layers' dropout is off (their outputs are the eval-mode ones), as with strategy ``head``.

Supported: encoder-only models (BERT family) whose blocks sit under one module beside the
embeddings and whose only parameters after the blocks are a pooler. :func:`frozen_layer_cache`
returns None for any other model, and the caller runs the plain forward.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tunewise.models.feature_cache import cache_root, fingerprint, load_sequences, save_sequences, tensors_fingerprint
from tunewise.strategies.layers import layer_map

_FLUSH_ROWS = 512  # rows kept in memory before a shard is written
# Rows read or computed by this process, per cache key: every budget point, and the evaluations
# before and after, share one copy instead of re-reading the shards (two keys kept).
_SHARED: dict[str, tuple[dict[bytes, torch.Tensor], list[str]]] = {}


def _embeddings_module(backbone: nn.Module, names: list[str]) -> str | None:
    """The one direct child holding every embedding parameter (``embeddings`` in BERT), or None."""
    heads = {n.split(".", 1)[0] for n in names}
    return heads.pop() if len(heads) == 1 and names and all("." in n for n in names) else None


def frozen_layer_cache(backbone: nn.Module, n_layers: int, *, precision: str = "fp32", max_length: int | None = None,
                       storage: torch.dtype = torch.float16, use_disk: bool = True) -> FrozenLayerCache | None:
    """A cache of ``backbone``'s embeddings + first ``n_layers`` blocks, or None when it cannot apply
    (no frozen block, a decoder, an unrecognised layout)."""
    config = getattr(backbone, "config", None)
    if n_layers < 1 or config is None or getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return None
    try:
        lm = layer_map(backbone)
    except Exception:  # not a layered model
        return None
    emb = _embeddings_module(backbone, lm.embeddings)
    parent_path, _, leaf = lm.blocks_path.rpartition(".")
    if emb is None or not leaf or any(not n.startswith("pooler.") for n in lm.top) or n_layers > lm.depth:
        return None
    return FrozenLayerCache(backbone, n_layers, emb, parent_path, leaf, precision=precision, max_length=max_length,
                            storage=storage, use_disk=use_disk)


class FrozenLayerCache:
    """Per-sequence outputs of the frozen bottom of an encoder; see the module docstring.

    Attributes:
        key: the cache folder's fingerprint.
        hits, misses: sequences read from the cache / run through the frozen layers so far.
    """

    def __init__(self, backbone: nn.Module, n_layers: int, embeddings: str, parent: str, leaf: str, *,
                 precision: str, max_length: int | None, storage: torch.dtype, use_disk: bool) -> None:
        self.backbone, self.n = backbone, n_layers
        self.embeddings = backbone.get_submodule(embeddings)
        self.parent = backbone.get_submodule(parent) if parent else backbone
        self.leaf = leaf
        self.blocks: nn.ModuleList = getattr(self.parent, leaf)
        self.precision, self.storage, self.use_disk = precision, storage, use_disk
        frozen = {f"{embeddings}.{k}": v for k, v in self.embeddings.state_dict().items()}
        for i in range(n_layers):
            frozen.update({f"block{i}.{k}": v for k, v in self.blocks[i].state_dict().items()})
        self.key = fingerprint(kind="frozen-layers", arch=type(backbone).__name__, weights=tensors_fingerprint(frozen),
                               layers=n_layers, max_length=max_length, precision=precision, storage=str(storage))
        self.rows: dict[bytes, torch.Tensor] = {}
        self.problems: list[str] = []
        if use_disk:
            if self.key not in _SHARED:
                if len(_SHARED) >= 2:
                    _SHARED.pop(next(iter(_SHARED)))
                rows, problems, _ = load_sequences(self.key)
                _SHARED[self.key] = (rows, problems)
            self.rows, self.problems = _SHARED[self.key]
        self._pending: list[bytes] = []
        self._hidden: torch.Tensor | None = None
        self._depth = 0
        self.hits = self.misses = 0

    @property
    def path(self):
        return cache_root() / self.key

    # -- the patched forward ----------------------------------------------------------------
    @contextlib.contextmanager
    def active(self) -> Iterator[FrozenLayerCache]:
        """Inside the block the backbone reads its frozen part from the cache (pending rows are
        written to disk on exit). Re-entrant: an evaluation inside training keeps the patch."""
        if self._depth or "forward" in self.backbone.__dict__:  # this or another cache of the model is on
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        backbone_forward = self.backbone.forward
        emb_forward = self.embeddings.forward
        block_forwards = [b.forward for b in self.blocks[: self.n]]

        def forward(*args: Any, **kwargs: Any):
            hidden = self._lookup(args, kwargs)
            if hidden is None:  # inputs the cache does not cover: the plain forward
                return backbone_forward(*args, **kwargs)
            self._hidden = hidden
            try:
                return backbone_forward(*args, **kwargs)
            finally:
                self._hidden = None

        def embeddings(*args: Any, **kwargs: Any):
            return self._hidden if self._hidden is not None else emb_forward(*args, **kwargs)

        def passthrough(original):
            def block(hidden_states, *args: Any, **kwargs: Any):
                return hidden_states if self._hidden is not None else original(hidden_states, *args, **kwargs)
            return block

        self.backbone.forward = forward
        self.embeddings.forward = embeddings
        for b, original in zip(self.blocks[: self.n], block_forwards):
            b.forward = passthrough(original)
        try:
            yield self
        finally:
            for module in (self.backbone, self.embeddings, *self.blocks[: self.n]):
                module.__dict__.pop("forward", None)
            self._depth = 0
            self.flush()

    def _lookup(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """(batch, seq, dim) states after the frozen blocks for this call's inputs, or None."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        types = kwargs.get("token_type_ids", args[2] if len(args) > 2 else None)
        if ids is None or ids.ndim != 2 or ids.shape[0] == 0 or len(args) > 3:
            return None
        if kwargs.get("position_ids") is not None or kwargs.get("inputs_embeds") is not None:
            return None
        if mask is None:
            mask = torch.ones_like(ids)
        lengths = mask.sum(-1)
        # right padding only: positions (and so the states) of a left-padded text depend on its batch
        if not bool((mask == (torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]).to(mask.dtype)).all()):
            return None
        keys = [self._row_key(ids[i, :n], None if types is None else types[i, :n]) for i, n in enumerate(lengths.tolist())]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        if todo:
            self._compute(ids, mask, types, todo, keys, lengths)
        self.hits += len(keys) - len(todo)
        dtype = next(self.blocks[self.n - 1].parameters()).dtype
        out = torch.zeros(ids.shape[0], ids.shape[1], self.rows[keys[0]].shape[-1], dtype=dtype, device=ids.device)
        for i, (k, n) in enumerate(zip(keys, lengths.tolist())):
            out[i, :n] = self.rows[k].to(device=ids.device, dtype=dtype)
        return out  # (batch, seq, hidden); padded positions are zeros, masked by attention

    @staticmethod
    def _row_key(ids: torch.Tensor, types: torch.Tensor | None) -> bytes:
        h = hashlib.sha256(ids.detach().cpu().to(torch.int64).numpy().tobytes())
        if types is not None and bool(types.any()):
            h.update(b"types" + types.detach().cpu().to(torch.int64).numpy().tobytes())
        return h.digest()

    @torch.no_grad()
    def _compute(self, ids, mask, types, todo: list[int], keys: list[bytes], lengths: torch.Tensor) -> None:
        """Run the rows ``todo`` through the embeddings and the frozen blocks only (eval mode, the
        cache's precision), and keep their unpadded states."""
        width = int(lengths[todo].max())
        sub = {"input_ids": ids[todo, :width], "attention_mask": mask[todo, :width]}
        if types is not None:
            sub["token_type_ids"] = types[todo, :width]
        modes = [(m, m.training) for m in (self.embeddings, *self.blocks[: self.n])]
        setattr(self.parent, self.leaf, nn.ModuleList(list(self.blocks[: self.n])))
        device_type = "cuda" if ids.device.type == "cuda" else "cpu"
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        try:
            for m, _ in modes:
                m.eval()
            with torch.autocast(device_type=device_type, dtype=half or torch.bfloat16, enabled=half is not None):
                states = self.backbone.__class__.forward(self.backbone, **sub, return_dict=True).last_hidden_state
        finally:
            setattr(self.parent, self.leaf, self.blocks)
            for m, mode in modes:
                m.train(mode)
        for j, i in enumerate(todo):
            self.rows[keys[i]] = states[j, : int(lengths[i])].to(self.storage).cpu().clone()
            self._pending.append(keys[i])
        self.misses += len(todo)
        if len(self._pending) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the rows computed since the last flush as one shard."""
        if self._pending and self.use_disk:
            save_sequences(self.key, self._pending, [self.rows[k] for k in self._pending])
        self._pending = []

    def disk_bytes(self) -> int:
        """Bytes the key's shards take on disk."""
        return sum(p.stat().st_size for p in self.path.glob("seq-*.safetensors")) if self.path.is_dir() else 0

    def report(self) -> dict[str, Any]:
        """What the cache did, for metrics.json ``strategy.details``."""
        return {"key": self.key, "path": str(self.path) if self.use_disk else None, "frozen_layers": self.n,
                "hits": self.hits, "computed": self.misses, "rows": len(self.rows),
                "disk_mb": round(self.disk_bytes() / 2**20, 2), "storage": str(self.storage).replace("torch.", ""),
                **({"rebuilt": sorted(set(self.problems))} if self.problems else {})}
