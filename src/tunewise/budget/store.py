"""A resumable, crash-safe store of finished budget points (one JSON object per line).

Layout of ``results.jsonl``::

    {"tunewise_store": 1, "fingerprint": "<sha256>", "created": "...", "config": {...}}
    {"kind": "data", "size": 25, "seed": 0, "metric_before": 0.41, ...}
    ...

Why this shape:

* **append-only JSONL**: a finished point is one ``os.write`` of one line on a file opened
  with ``O_APPEND``, followed by ``fsync``. A process killed with SIGKILL either wrote the
  whole line or a prefix of it; it never rewrites earlier lines, so finished points are never
  lost. A torn (partial) last line is ignored on read and cut off before the next append.
* **fingerprint in the header**: the sha256 of the resolved config (canonical JSON). Reopening
  with another fingerprint is an error rather than a silent mix of points measured under two
  configs; the user either points ``--output`` at a new folder or passes ``--fresh``, which
  starts the store over (the old file is kept next to it as ``*.stale-<time>.jsonl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError
from tunewise.files import write_text

FORMAT_VERSION = 1
# What a torn or foreign line raises when parsed into a point (JSONDecodeError and
# UnicodeDecodeError are ValueErrors; a bare number or list has no .items()).
_BAD_LINE = (ValueError, TypeError, AttributeError)
_FIELDS = {f.name for f in dataclasses.fields(BudgetPoint)}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and stable number forms (the hashing input)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
        default=_jsonable,
    )


def _jsonable(value: Any) -> Any:
    # Paths, tuples-in-sets and enums appear in resolved configs; hash their text form.
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return str(value)


def config_fingerprint(config: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """sha256 hex digest of the canonical JSON of a resolved config.

    Args:
        config: the fully resolved config (defaults filled in), as a mapping.
        ignore: top-level keys that do not change results (output folder, verbosity,
            ``fresh``) and must not invalidate a store.

    Raises:
        TunewiseError: when the config holds NaN or infinity (not canonical JSON).
    """
    skip = set(ignore)
    data = {k: v for k, v in config.items() if k not in skip}
    try:
        text = canonical_json(data)
    except ValueError as exc:
        raise TunewiseError(
            f"config: cannot fingerprint a config with NaN/inf values ({exc}); set them to numbers"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def point_to_dict(point: BudgetPoint) -> dict[str, Any]:
    return dataclasses.asdict(point)


def point_from_dict(data: Mapping[str, Any]) -> BudgetPoint:
    """Rebuild a point; unknown keys (written by a newer tunewise) go into ``extra``."""
    known = {k: v for k, v in data.items() if k in _FIELDS}
    unknown = {k: v for k, v in data.items() if k not in _FIELDS}
    if unknown:
        known["extra"] = {**known.get("extra", {}), **unknown}
    return BudgetPoint(**known)


def _fsync_dir(path: Path) -> None:
    # The rename itself must reach the disk, which on POSIX means fsync of the directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultStore:
    """Append-only JSONL store of finished budget points, keyed by a config fingerprint.

    Args:
        path: the ``.jsonl`` file (created with its folder when missing).
        fingerprint: :func:`config_fingerprint` of the resolved config.
        config: the config itself, stored in the header so a person can see what was run.
        fresh: start over even if the file exists; the old file is kept next to it as
            ``<name>.stale-<time>.jsonl``.

    Raises:
        TunewiseError: when the file exists with another fingerprint and ``fresh`` is False,
            or is not a result store; :meth:`points` when a line other than the last is
            damaged.

    Example:
        >>> store = ResultStore(out / "results.jsonl", config_fingerprint(cfg), config=cfg)
        >>> todo = [k for k in planned if k not in store.done()]
        >>> store.append(point)  # durable once this returns
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fingerprint: str,
        config: Mapping[str, Any] | None = None,
        fresh: bool = False,
    ) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.torn_lines = 0
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and fresh:
            # Start over, but never destroy measurements: the old file is moved aside.
            stamp = time.strftime("%Y%m%d-%H%M%S")
            os.replace(self.path, self.path.with_name(f"{self.path.stem}.stale-{stamp}.jsonl"))
            self._create(config)
        elif exists:
            header = self._read_header()
            if header.get("fingerprint") != fingerprint:
                raise TunewiseError(
                    f"--output: {self.path} holds points from a different config (fingerprint "
                    f"{_short_fp(header)}… vs {fingerprint[:12]}…); use a new output folder, "
                    "or pass --fresh to start this store over"
                )
            self._repair_tail()
        else:
            self._create(config)

    # -- writing ----------------------------------------------------------------------------

    def _create(self, config: Mapping[str, Any] | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "tunewise_store": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": json.loads(canonical_json(dict(config))) if config is not None else None,
        }
        # A reader never sees a store without its header: it appears whole or not at all.
        write_text(self.path, json.dumps(header, sort_keys=True) + "\n", sync=True)
        _fsync_dir(self.path.parent)

    def append(self, point: BudgetPoint) -> None:
        """Write one finished point durably: one ``write`` of the whole line, then fsync."""
        # NaN is allowed: a diverged run is a measurement too (Python's json reads it back).
        text = json.dumps(point_to_dict(point), sort_keys=True, default=_jsonable)
        line = (text + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:  # a regular-file write is whole in practice; loop for the contract
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _repair_tail(self) -> None:
        """Cut a torn last line (a write interrupted by a kill) so the next append is clean."""
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            try:  # killed between the last byte of the object and its newline: keep it
                point_from_dict(json.loads(data[cut:]))
                fh.write(b"\n")
            except _BAD_LINE:
                self.torn_lines += 1
                fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    # -- reading ----------------------------------------------------------------------------

    def _read_header(self) -> dict[str, Any]:
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "tunewise_store" not in header:
            raise TunewiseError(
                f"--output: {self.path} is not a tunewise result store (no header line); "
                "choose a new output folder"
            )
        return header

    @property
    def header(self) -> dict[str, Any]:
        return self._read_header()

    def points(self) -> list[BudgetPoint]:
        """Finished points in write order; a later line for the same key replaces an earlier one."""
        with open(self.path, "rb") as fh:
            lines = fh.read().split(b"\n")
        by_key: dict[tuple, BudgetPoint] = {}
        last = len(lines) - 1
        for number, raw in enumerate(lines[1:], start=2):
            if not raw.strip():
                continue
            try:
                point = point_from_dict(json.loads(raw))
            except _BAD_LINE:
                if number - 1 == last:  # torn tail: the run was killed mid-write
                    self.torn_lines = max(self.torn_lines, 1)
                    continue
                raise TunewiseError(
                    f"--output: {self.path} line {number} is not a valid point; the store is "
                    "damaged: move the file away or pass --fresh"
                ) from None
            by_key.pop(point.key, None)
            by_key[point.key] = point
        return list(by_key.values())

    def done(self) -> set[tuple[str, int, int, float | None]]:
        """Keys ``(kind, size, seed, epoch)`` of every finished point."""
        return {p.key for p in self.points()}

    def __len__(self) -> int:
        return len(self.points())


def _short_fp(header: Mapping[str, Any]) -> str:
    """Short form of a header's fingerprint, for file names and messages."""
    return str(header.get("fingerprint") or "none")[:12]
