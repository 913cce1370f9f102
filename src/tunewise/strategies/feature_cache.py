"""An on-disk cache of frozen-backbone outputs, keyed by what they depend on.

``~/.cache/tunewise/features/<fingerprint>/features.safetensors`` (``TUNEWISE_CACHE`` moves
the root). The fingerprint hashes the backbone's weights, the preprocessing (module configs,
tokenizer vocabulary, sequence length) and the exact texts, so a change to any of them is a
different entry. Each file also records its own fingerprint and a SHA-256 of the tensor
bytes: a truncated, corrupted or misplaced file is detected on load and rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "1"


def cache_root() -> Path:
    from tunewise.demo import cache_dir

    return cache_dir() / "features"


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (parameters and buffers)."""

    def parts():
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}".encode()
            yield t.view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return _digest(parts())


def texts_fingerprint(texts: list[str]) -> str:
    return _digest(t.encode("utf-8") + b"\x00" for t in texts)


def fingerprint(**parts: Any) -> str:
    """One key from named parts (strings, numbers, dicts): order-independent JSON, hashed."""
    return _digest([json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()])[:32]


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class CacheResult:
    """The features and how they were obtained: "hit", "miss" (built) or "rebuilt: <why>"."""

    features: torch.Tensor
    status: str
    path: Path
    seconds: float = 0.0


def load(key: str, rows: int) -> tuple[torch.Tensor | None, str]:
    """The cached features for ``key``, or None with the reason they cannot be used."""
    from safetensors import safe_open

    path = cache_root() / key / "features.safetensors"
    if not path.is_file():
        return None, "miss"
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            features = fh.get_tensor("features")
    except Exception as err:  # any unreadable file is a corrupt cache entry: rebuild it
        return None, f"rebuilt: unreadable ({type(err).__name__})"
    if meta.get("fingerprint") != key or meta.get("format") != FORMAT:
        return None, "rebuilt: fingerprint mismatch (stale entry)"
    if features.shape[0] != rows or meta.get("rows") != str(rows):
        return None, f"rebuilt: {features.shape[0]} rows cached, {rows} expected"
    if meta.get("sha256") != _tensor_sha(features):
        return None, "rebuilt: checksum mismatch (corrupted)"
    return features, "hit"


def save(key: str, features: torch.Tensor) -> Path:
    """Write atomically (temp file, then rename) so a crash never leaves a half-written entry."""
    from safetensors.torch import save_file

    folder = cache_root() / key
    folder.mkdir(parents=True, exist_ok=True)
    features = features.detach().cpu().contiguous()
    meta = {"fingerprint": key, "format": FORMAT, "rows": str(features.shape[0]), "sha256": _tensor_sha(features)}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".features.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"features": features}, tmp, metadata=meta)
        os.replace(tmp, folder / "features.safetensors")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return folder / "features.safetensors"


def cached_features(key: str, rows: int, compute: Callable[[], torch.Tensor], *, use_cache: bool = True) -> CacheResult:
    """Load the features for ``key``, or compute (and store) them."""
    import time

    path = cache_root() / key / "features.safetensors"
    if use_cache:
        features, status = load(key, rows)
        if features is not None:
            return CacheResult(features, status, path)
    else:
        status = "off"
    start = time.perf_counter()
    features = compute()
    seconds = time.perf_counter() - start
    if use_cache:
        save(key, features)
    return CacheResult(features, status, path, seconds)
