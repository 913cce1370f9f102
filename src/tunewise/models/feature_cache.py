"""An on-disk cache of frozen-backbone outputs, one row per distinct input, keyed by what they depend on.

``~/.cache/tunewise/features/<fingerprint>/shard-*.safetensors`` (``TUNEWISE_CACHE`` moves
the root). The fingerprint hashes the backbone's weights and the preprocessing (module
configs, tokenizer vocabulary, sequence length): a change to any of them is a different
folder. Inside it, rows are stored by the SHA-256 of their input (a text), so any subset of
texts seen before is read back, and only new texts run through the backbone: a budget
sweep over nested subsets, epochs after the first, later runs and the evaluation corpus all
pay for each text once. Each shard records its folder's fingerprint and a SHA-256 of its
tensors: a truncated, corrupted or misplaced shard is detected on load, deleted and its rows
recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "2"


def cache_root() -> Path:
    from tunewise.files import cache_root as root

    return root() / "features"


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (parameters and buffers)."""
    return tensors_fingerprint(module.state_dict())


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A 128-bit hash of named tensors (name, dtype, shape and bytes), in name order.

    xxHash3 (installed with ``datasets``) hashes a MiniLM's 90 MB in ~17 ms against ~80 ms for
    SHA-256: a cache key needs no cryptographic strength, and a budget sweep computes it per point.
    """
    try:
        import xxhash

        h = xxhash.xxh3_128()
    except ImportError:  # pragma: no cover - datasets depends on xxhash
        h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def texts_fingerprint(texts: list[str]) -> str:
    return _digest(t.encode("utf-8") + b"\x00" for t in texts)


def fingerprint(**parts: Any) -> str:
    """One key from named parts (strings, numbers, dicts): order-independent JSON, hashed."""
    return _digest([json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()])[:32]


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class CacheResult:
    """The features and how they were obtained.

    ``status``: "hit" (all rows cached), "miss" (none), "partial: N of M rows encoded", or
    "off" (cache disabled), prefixed by "rebuilt: <why>; " when a damaged shard was dropped.
    """

    features: torch.Tensor
    status: str
    path: Path
    seconds: float = 0.0
    encoded: int = 0


def _text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _read_shard(key: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(hashes (n, 32) uint8, features (n, d)) of a shard, or ValueError saying why it is unusable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            hashes, features = fh.get_tensor("hashes"), fh.get_tensor("features")
    except Exception as err:  # any unreadable file is a damaged shard
        raise ValueError(f"unreadable ({type(err).__name__})") from None
    if meta.get("fingerprint") != key or meta.get("format") != FORMAT:
        raise ValueError("fingerprint mismatch (stale entry)")
    if hashes.shape[0] != features.shape[0] or meta.get("rows") != str(features.shape[0]):
        raise ValueError(f"{features.shape[0]} rows for {hashes.shape[0]} hashes")
    if meta.get("sha256") != _tensor_sha(torch.cat([hashes.flatten(), features.contiguous().view(torch.uint8).flatten()])):
        raise ValueError("checksum mismatch (corrupted)")
    return hashes, features


def load(key: str, texts: list[str]) -> tuple[dict[bytes, torch.Tensor], list[str]]:
    """Cached rows for ``texts`` under ``key`` ({text hash: row}); and why any shard was dropped.

    A damaged or stale shard is deleted (its rows are recomputed by the caller).
    """
    folder = cache_root() / key
    wanted = {_text_hash(t) for t in texts}
    found: dict[bytes, torch.Tensor] = {}
    problems: list[str] = []
    for shard in sorted(folder.glob("shard-*.safetensors")) if folder.is_dir() else []:
        try:
            rows = _shard_rows(key, shard)
        except ValueError as err:
            problems.append(str(err))
            with contextlib.suppress(OSError):
                shard.unlink()
            continue
        for b, row in rows.items():
            if b in wanted and b not in found:
                found[b] = row
    return found, problems


# Shards already read and verified by this process, by (path, size, mtime): a budget sweep
# reads the same shards for every point and evaluation. A rewritten file has a new stamp.
_VERIFIED: dict[tuple[str, int, int], dict[bytes, torch.Tensor]] = {}


def _shard_rows(key: str, shard: Path) -> dict[bytes, torch.Tensor]:
    """{text hash: row} of a verified shard (ValueError when it is damaged or stale)."""
    stat = shard.stat()
    stamp = (str(shard.resolve()), stat.st_size, stat.st_mtime_ns)
    if stamp not in _VERIFIED:
        hashes, features = _read_shard(key, shard)
        if len(_VERIFIED) > 256:
            _VERIFIED.clear()
        _VERIFIED[stamp] = {bytes(h.tolist()): row for h, row in zip(hashes, features)}
    return _VERIFIED[stamp]


def save(key: str, texts: list[str], features: torch.Tensor) -> Path:
    """Write one shard atomically (temp file, then rename): a crash never leaves a half-written one."""
    from safetensors.torch import save_file

    folder = cache_root() / key
    folder.mkdir(parents=True, exist_ok=True)
    features = features.detach().cpu().contiguous()
    hashes = torch.tensor([list(_text_hash(t)) for t in texts], dtype=torch.uint8).reshape(len(texts), 32)
    sha = _tensor_sha(torch.cat([hashes.flatten(), features.view(torch.uint8).flatten()]))
    meta = {"fingerprint": key, "format": FORMAT, "rows": str(features.shape[0]), "sha256": sha}
    path = folder / f"shard-{sha[:24]}.safetensors"
    from tunewise.files import atomic_write

    return atomic_write(path, lambda tmp: save_file({"hashes": hashes, "features": features}, str(tmp), metadata=meta))


def cached_features(key: str, texts: list[str], compute: Callable[[list[str]], torch.Tensor], *,
                    use_cache: bool = True) -> CacheResult:
    """Features for ``texts`` (in order): cached rows are read, only the others are computed and stored.

    Args:
        key: the backbone/preprocessing fingerprint.
        texts: the inputs, one row each (duplicates allowed).
        compute: encodes a list of texts to (n, d) features.
        use_cache: False computes everything and stores nothing (benchmarks).

    Rows computed under autocast (``train.precision`` bf16/fp16) are stored under their own
    key (``key`` plus the precision), in float32: fp32 and bf16 features never mix.
    """
    import time

    from tunewise.precision import autocast_precision, to_float32

    precision = autocast_precision()
    if precision != "fp32":  # fp32 keys stay as they were (caches written before precision mattered)
        key = fingerprint(features=key, precision=precision)
    raw_compute = compute
    compute = lambda todo: to_float32(raw_compute(todo))  # noqa: E731
    folder = cache_root() / key
    distinct = list(dict.fromkeys(texts))
    if not use_cache:
        start = time.perf_counter()
        rows = compute(distinct)
        by_text = dict(zip(distinct, rows))
        return CacheResult(torch.stack([by_text[t] for t in texts]), "off", folder, time.perf_counter() - start, len(distinct))
    found, problems = load(key, distinct)
    missing = [t for t in distinct if _text_hash(t) not in found]
    seconds = 0.0
    if missing:
        start = time.perf_counter()
        new = compute(missing)
        seconds = time.perf_counter() - start
        save(key, missing, new)
        found.update({_text_hash(t): row for t, row in zip(missing, new)})
    if not missing:
        status = "hit"
    elif len(missing) == len(distinct):
        status = "miss"
    else:
        status = f"partial: {len(missing)} of {len(distinct)} rows encoded"
    if problems:
        status = f"rebuilt: {'; '.join(sorted(set(problems)))}; {status}"
    features = torch.stack([found[_text_hash(t)] for t in texts]) if texts else torch.empty(0)
    return CacheResult(features, status, folder, seconds, len(missing))


# -- variable-length rows: per-token hidden states (strategy partial's frozen layers) ------------
# A shard holds ``hashes`` (n, 32) uint8, ``lengths`` (n,) int64 and ``features`` (sum of
# lengths, d): row i is ``features[offset_i : offset_i + lengths_i]``. Half precision keeps a
# 256-token MiniLM text at 256 x 384 x 2 bytes = 192 KiB.


def _sequence_sha(hashes: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor) -> str:
    return _tensor_sha(torch.cat([hashes.flatten(), lengths.contiguous().view(torch.uint8).flatten(),
                                  features.contiguous().view(torch.uint8).flatten()]))


def save_sequences(key: str, hashes: list[bytes], rows: list[torch.Tensor]) -> Path:
    """Write variable-length rows ((len_i, d) each, keyed by 32-byte hashes) as one shard, atomically."""
    from safetensors.torch import save_file

    from tunewise.files import atomic_write

    folder = cache_root() / key
    folder.mkdir(parents=True, exist_ok=True)
    h = torch.tensor([list(b) for b in hashes], dtype=torch.uint8).reshape(len(hashes), 32)
    lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64)
    with torch.autocast("cpu", enabled=False):  # an evaluation's bf16 autocast refuses to cat fp16 rows
        features = torch.cat([r.detach().cpu() for r in rows]).contiguous()
    sha = _sequence_sha(h, lengths, features)
    meta = {"fingerprint": key, "format": FORMAT, "kind": "sequences", "rows": str(len(hashes)), "sha256": sha}
    path = folder / f"seq-{sha[:24]}.safetensors"
    return atomic_write(path, lambda tmp: save_file({"hashes": h, "lengths": lengths, "features": features}, str(tmp),
                                                    metadata=meta))


def _read_sequence_shard(key: str, path: Path) -> dict[bytes, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            hashes, lengths, features = fh.get_tensor("hashes"), fh.get_tensor("lengths"), fh.get_tensor("features")
    except Exception as err:  # any unreadable file is a damaged shard
        raise ValueError(f"unreadable ({type(err).__name__})") from None
    if meta.get("fingerprint") != key or meta.get("format") != FORMAT or meta.get("kind") != "sequences":
        raise ValueError("fingerprint mismatch (stale entry)")
    if hashes.shape[0] != lengths.shape[0] or int(lengths.sum()) != features.shape[0] or meta.get("rows") != str(hashes.shape[0]):
        raise ValueError(f"{features.shape[0]} token rows for lengths summing to {int(lengths.sum())}")
    if meta.get("sha256") != _sequence_sha(hashes, lengths, features):
        raise ValueError("checksum mismatch (corrupted)")
    return {bytes(h.tolist()): row for h, row in zip(hashes, torch.split(features, lengths.tolist()))}


def load_sequences(key: str) -> tuple[dict[bytes, torch.Tensor], list[str], int]:
    """Every variable-length row stored under ``key``, why any shard was dropped (and deleted), and
    the bytes the kept shards take on disk."""
    folder = cache_root() / key
    found: dict[bytes, torch.Tensor] = {}
    problems: list[str] = []
    size = 0
    for shard in sorted(folder.glob("seq-*.safetensors")) if folder.is_dir() else []:
        try:
            rows = _read_sequence_shard(key, shard)
        except ValueError as err:
            problems.append(str(err))
            with contextlib.suppress(OSError):
                shard.unlink()
            continue
        size += shard.stat().st_size
        for b, row in rows.items():
            found.setdefault(b, row)
    return found, problems, size
