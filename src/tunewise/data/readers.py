"""Read tabular records from CSV, JSONL, Parquet or a local Hugging Face `datasets` folder.

Every reader returns a list of plain dicts. Errors name the file (and the line or row when
it helps) and say how to fix the input: the CLI shows them as one line with exit code 2.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
import sys
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


# csv's default field limit (128 KiB) is far below what JSONL and Parquet accept; a long
# document in one cell must read the same in every format. Raised once, never lowered.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def _read_csv(path: Path) -> list[Record]:
    """CSV/TSV rows as dicts of strings, parsed by the csv module straight from the file.

    The file is opened with ``newline=""`` so that line breaks inside quoted values (CRLF,
    LF, and U+0085, U+2028, U+2029 which ``str.splitlines`` would also break at) stay in the
    value, and with ``utf-8-sig`` so that a byte-order mark is not part of the first column
    name. Parsing is strict: a quote that is never closed would otherwise swallow the rest
    of the file into one value.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    dialect: Any = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    separator = "tabs" if dialect == "excel-tab" else "commas"
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, dialect=dialect, strict=True)
            start = 1  # line where the record being parsed starts
            try:
                if reader.fieldnames is None:
                    return []
                _check_header(reader.fieldnames, path)
                records = []
                start = reader.line_num + 1
                for row in reader:
                    if None in row:
                        raise TunewiseError(
                            f"{path}: line {reader.line_num} has more fields than the header; quote values that contain {separator}"
                        )
                    records.append(dict(row))
                    start = reader.line_num + 1
            except csv.Error as err:
                raise _csv_error(err, path, start, reader.reader.line_num, separator) from None  # DictReader's lags
    except UnicodeDecodeError:
        path.read_bytes().decode("utf-8")  # raises again with the offset in the file, not in a buffer
        raise
    return records


def _check_header(fieldnames: Sequence[str], path: Path) -> None:
    seen: set[str] = set()
    for name in fieldnames:
        if name and name in seen:  # csv.DictReader would silently keep only the last column
            raise TunewiseError(f"{path}: the header names column '{name}' twice; rename or remove one of them")
        seen.add(name)


def _csv_error(err: csv.Error, path: Path, start: int, line: int, separator: str) -> TunewiseError:
    message = str(err)
    if "unexpected end of data" in message:
        return TunewiseError(
            f"{path}: the quoted value that starts on line {start} is never closed; "
            'close the quote, and write a quote inside a quoted value as two ("")'
        )
    if "expected after" in message:
        return TunewiseError(
            f"{path}: line {line} has text after the closing quote of a value ({message}); "
            f'quote the whole value and write a quote inside it as two ("")'
        )
    return TunewiseError(f"{path}: line {line} is not valid CSV ({message}); quote values that contain {separator}, quotes or line breaks")


def _read_jsonl(path: Path) -> list[Record]:
    text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # a byte-order mark (some Windows editors write one)
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
    # Only CR/LF end a JSON line: U+0085, U+2028 and U+2029 are allowed unescaped inside
    # JSON strings (json.dumps(ensure_ascii=False) writes them so), unlike str.splitlines.
    for line_no, line in enumerate(_JSON_LINE_BREAK.split(text), start=1):
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


_JSON_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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


# The strings pandas reads as missing by default (pandas._libs.parsers.STR_NA_VALUES in
# pandas 2 and 3); used when pandas cannot be imported.
_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


@functools.cache
def na_strings() -> frozenset[str]:
    """The cell values that mean "no value" for a label: pandas' default NA strings."""
    try:
        from pandas._libs.parsers import STR_NA_VALUES
    except (ImportError, AttributeError):
        return _NA_STRINGS
    return frozenset(STR_NA_VALUES) | {""}


def label_value(record: Record, column: str, row: int, path: str | Path, on_missing: str = "error") -> str | None:
    """A record's label as a stripped string, or None for a missing label that is to be skipped.

    A label is missing when it is absent, null, NaN, empty or one of pandas' NA strings
    ("NaN", "N/A", "null", "None", ...): such a value must not silently become a class.

    Args:
        on_missing: ``error`` (raise), ``skip`` (return None: the caller drops and counts the
            row) or ``keep`` (NA strings are class names; empty and null labels still raise).

    Raises:
        TunewiseError: a missing label with ``on_missing: error`` (or an empty one with
            ``keep``), naming the file, row and column and how to fix it.
    """
    value = record.get(column)
    empty = value is None or (isinstance(value, float) and math.isnan(value))
    text = "" if empty else text_value(record, column, row, path, allow_empty=True)  # lists etc. raise here
    if not empty and (text not in na_strings() or (text and on_missing == "keep")):
        return text
    if on_missing == "skip":
        return None
    shown = "null" if value is None else "NaN" if empty else "empty" if not text else repr(text)
    fix = "fill it, remove the row, or set data.on_missing_label: skip"
    if text:
        fix += f" (or keep, if '{text}' is a real class)"
    raise TunewiseError(f"{path}: row {row + 1} has no label in column '{column}' ({shown} counts as missing); {fix}")


def no_labels_left(path: str | Path, column: str, skipped: int) -> TunewiseError:
    """The error when ``data.on_missing_label: skip`` leaves no row at all."""
    return TunewiseError(f"{path}: all {skipped} rows have a missing label in column '{column}'; fill the labels or set data.columns.label")
