"""Files: the one atomic write every output goes through, and where tunewise caches things.

Every file tunewise writes (metrics, configs, model cards, reports, plots, cache shards, the
budget planner's result store) is written to a temporary file in the same folder and renamed
into place, so a crash or a kill never leaves a half-written file that looks finished. The
temporary file is created private (``mkstemp``); the renamed result gets the permissions the
user's umask gives any new file, like the model files the libraries write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$TUNEWISE_CACHE``, else ``$XDG_CACHE_HOME/tunewise``, else ``~/.cache/tunewise`` (created)."""
    root = os.environ.get("TUNEWISE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tunewise")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def umask() -> int:
    """The process's umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], *, sync: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    Args:
        path: the destination; its folder is created.
        write: writes the whole content to the path it is given.
        sync: fsync before the rename (files other processes read while they are replaced).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def write_text(path: str | os.PathLike[str], text: str, *, sync: bool = False) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), sync=sync)


def finite_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None: strict JSON has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write strict JSON atomically (non-finite numbers become null; other objects their str)."""
    text = json.dumps(finite_json(data), indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n"
    return write_text(path, text)


def staging_folder(target: Path) -> Path:
    """A fresh empty folder beside ``target`` to build it in (unique per call, so parallel builds don't collide)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))


def publish_folder(staged: Path, target: Path) -> Path:
    """Move a finished ``staged`` folder to ``target`` (renames: readers never see a half-built folder).

    An existing ``target`` (an older or interrupted build) is moved aside and removed; when a
    parallel build published first, that one is kept and ``staged`` is removed.
    """
    aside = None
    if target.exists():
        aside = staging_folder(target)
        try:
            target.rename(aside / "old")
        except OSError:
            pass
    os.chmod(staged, 0o777 & ~umask())  # mkdtemp made it private; published folders get the usual permissions
    try:
        staged.rename(target)
    except OSError:  # another process published its own build in between
        shutil.rmtree(staged, ignore_errors=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def inside_root(root: Path, value: str, where: str, *, kind: str, fix: str) -> Path:
    """``root / value`` resolved (symlinks followed); it must stay inside ``root``.

    Args:
        kind: what the path names, for the message ("image", "audio").
        fix: how to fix it, for the message.

    Raises:
        TunewiseError: the path escapes the root.
    """
    from tunewise.errors import TunewiseError

    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise TunewiseError(f"{where}: {kind} path '{value}' is outside the data root {root}; {fix}")
    return path
