"""Read tabular records from CSV, JSONL, Parquet or a local Hugging Face `datasets` folder.

Every reader returns a list of plain dicts. Errors name the file (and the line or row when
it helps) and say how to fix the input: the CLI shows them as one line with exit code 2.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError, did_you_mean

Record = dict[str, Any]

_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The reader for ``path``: the given format, or one guessed from the extension."""
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    guessed = _EXTENSIONS.get(path.suffix.lower())
    if guessed is None:
        raise TunewiseError(
            f"{path}: cannot tell the format from the extension '{path.suffix}'; "
            "use .csv, .jsonl, .parquet or a datasets folder, or set data.format"
        )
    return guessed


def read_records(path: str | Path, fmt: str = "auto", option: str = "data.train") -> list[Record]:
    """Read all records of a data file.

    Args:
        path: the file or `datasets` folder.
        fmt: auto, csv, jsonl, parquet or hf.
        option: the config option that named the file, for error messages.

    Returns:
        One dict per row (CSV values are strings; other formats keep their types).

    Raises:
        TunewiseError: missing file, unreadable or non-UTF-8 content, no rows.
    """
    path = Path(path)
    if not path.exists():
        raise TunewiseError(f"{option}: file not found: {path}")
    kind = detect_format(path, fmt)
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf}
    try:
        records = readers[kind](path)
    except UnicodeDecodeError as err:
        raise TunewiseError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); re-save the file as UTF-8"
        ) from None
    if not records:
        raise TunewiseError(f"{option}: {path} has no rows; give a file with at least two examples")
    return records


def _read_csv(path: Path) -> list[Record]:
    text = path.read_bytes().decode("utf-8")  # strict: non-UTF-8 raises with the offset
    if text.startswith("\ufeff"):
        text = text[1:]
    dialect: Any = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.DictReader(text.splitlines(keepends=True), dialect=dialect)
    if reader.fieldnames is None:
        return []
    records = []
    for row in reader:
        if None in row:
            raise TunewiseError(f"{path}: line {reader.line_num} has more fields than the header; quote values that contain commas")
        records.append(dict(row))
    return records


def _read_jsonl(path: Path) -> list[Record]:
    text = path.read_bytes().decode("utf-8")
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise TunewiseError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        if not all(isinstance(r, dict) for r in data):
            raise TunewiseError(f"{path}: expected a list of objects")
        return list(data)
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TunewiseError(f"{path}: line {line_no} is not valid JSON ({err.msg}); JSONL needs one object per line") from None
        if not isinstance(record, dict):
            raise TunewiseError(f"{path}: line {line_no} is a {type(record).__name__}, expected a JSON object")
        records.append(record)
    return records


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise TunewiseError(f"{path}: cannot read as Parquet ({str(err).splitlines()[0]})") from None
    return table.to_pylist()


def _read_hf(path: Path) -> list[Record]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:
        raise TunewiseError(
            f"{path}: not a dataset saved with datasets' save_to_disk ({str(err).splitlines()[0]})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    return ds.to_list()


def require_columns(records: Sequence[Record], columns: dict[str, str], path: str | Path, option: str = "data.columns") -> None:
    """Check every needed column exists; suggest the closest header name otherwise."""
    available = list(records[0].keys()) if records else []
    for role, column in columns.items():
        if column not in available:
            raise TunewiseError(
                f"{path}: no column '{column}' (for {role}){did_you_mean(column, available)}; "
                f"columns are: {', '.join(map(str, available))}. Set {option}.{role} to the right name"
            )


def text_value(record: Record, column: str, row: int, path: str | Path, *, allow_empty: bool = False) -> str:
    """A record's text field as a stripped string, with a row-precise error otherwise."""
    value = record.get(column)
    if value is None or (isinstance(value, float) and value != value):
        if allow_empty:
            return ""
        raise TunewiseError(f"{path}: row {row + 1} has no value in column '{column}'; fill it or remove the row")
    if isinstance(value, (bool, list, dict)):
        raise TunewiseError(
            f"{path}: row {row + 1}, column '{column}' holds a {type(value).__name__}, expected text"
        )
    text = str(value).strip()
    if not text and not allow_empty:
        raise TunewiseError(f"{path}: row {row + 1} has an empty '{column}'; fill it or remove the row")
    return text
