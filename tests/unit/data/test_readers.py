"""Readers: CSV, JSONL, Parquet, datasets folders; errors that name the file."""

from __future__ import annotations

import json

import pytest

from tunewise.data.readers import read_records, require_columns, text_value
from tunewise.errors import TunewiseError

ROWS = [{"query": "what is a permit", "positive": "a permit is ..."}, {"query": "roof rules", "positive": "roofs ..."}]


def test_csv_jsonl_parquet_hf_agree(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text("query,positive\n" + "".join(f"{r['query']},{r['positive']}\n" for r in ROWS), encoding="utf-8")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    for name in ("d.csv", "d.jsonl", "d.parquet", "hf"):
        assert read_records(tmp_path / name) == ROWS, name


def test_missing_file():
    with pytest.raises(TunewiseError, match="data.train: file not found: nope.csv"):
        read_records("nope.csv")


def test_non_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("query,positive\ncafé,x\n".encode("latin-1"))
    with pytest.raises(TunewiseError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9"):
        read_records(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("query,positive\n")
    with pytest.raises(TunewiseError, match="has no rows"):
        read_records(path)


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a"}\n{oops\n')
    with pytest.raises(TunewiseError, match="line 2 is not valid JSON"):
        read_records(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(TunewiseError, match="set data.format"):
        read_records(path)


def test_missing_column_suggests():
    with pytest.raises(TunewiseError, match=r"no column 'querry' \(for query\) \(did you mean 'query'\?\)"):
        require_columns(ROWS, {"query": "querry"}, "d.csv")


def test_text_value_types():
    with pytest.raises(TunewiseError, match="row 1, column 'q' holds a list"):
        text_value({"q": [1]}, "q", 0, "d.jsonl")
    with pytest.raises(TunewiseError, match="row 3 has no value in column 'q'"):
        text_value({"q": None}, "q", 2, "d.jsonl")
    assert text_value({"q": 12}, "q", 0, "d.jsonl") == "12"
