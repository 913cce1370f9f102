"""CSV as real tools write it: Unicode line separators, CRLF, BOM, huge cells, Excel quoting.

The reader parses with the csv module on the file itself (``newline=""``), so a value holds
whatever is between its quotes; CSV and JSONL of the same rows must read the same.
"""

from __future__ import annotations

import csv
import json

import pytest

from tunewise.data.readers import read_records
from tunewise.errors import TunewiseError

# U+0085 (NEL), U+2028 (LINE SEPARATOR), U+2029 (PARAGRAPH SEPARATOR), U+000B, U+000C, U+001C-1E:
# str.splitlines breaks at all of them; CSV only ends a record at CR/LF outside quotes.
SPLITLINES_BREAKS = ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def write_csv(path, rows, **kwargs):
    """Rows written by Python's csv module (Excel dialect: CRLF, quotes only where needed)."""
    with path.open("w", encoding=kwargs.pop("encoding", "utf-8"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), **kwargs)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("sep", SPLITLINES_BREAKS, ids=[f"U+{ord(c):04X}" for c in SPLITLINES_BREAKS])
def test_unicode_line_separators_inside_quoted_values(tmp_path, sep):
    path = tmp_path / "d.csv"
    path.write_text(f'text,label\n"first{sep}half",a\nplain,b\n', encoding="utf-8")
    assert read_records(path) == [{"text": f"first{sep}half", "label": "a"}, {"text": "plain", "label": "b"}]


@pytest.mark.parametrize("sep", ["\x85", "\u2028", "\u2029"])
def test_unicode_line_separators_in_unquoted_values(tmp_path, sep):
    path = tmp_path / "d.csv"
    path.write_text(f"text,label\nfirst{sep}half,a\nplain,b\n", encoding="utf-8")
    assert read_records(path) == [{"text": f"first{sep}half", "label": "a"}, {"text": "plain", "label": "b"}]


def test_thousands_of_rows_with_separators_keep_every_label(tmp_path):
    """The reported failure: "row 3003 has no value in column 'label'" from a U+2028 inside a text."""
    rows = [{"text": f"item {i}" + ("\u2028second line" if i % 7 == 0 else ""), "label": f"c{i % 3}"} for i in range(3500)]
    records = read_records(write_csv(tmp_path / "d.csv", rows))
    assert records == rows


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"query,positive\r\nwhat is a permit,a permit is\r\nroof rules,roofs\r\n")
    assert read_records(path) == [{"query": "what is a permit", "positive": "a permit is"},
                                  {"query": "roof rules", "positive": "roofs"}]


def test_old_mac_cr_line_endings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"query,positive\ra,b\rc,d\r")
    assert read_records(path) == [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d"}]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_breaks_inside_quoted_values_are_kept(tmp_path, newline):
    path = tmp_path / "d.csv"
    path.write_bytes(f'query,positive\r\n"line one{newline}line two",b\r\nc,"x{newline}{newline}y"\r\n'.encode())
    assert read_records(path) == [{"query": f"line one{newline}line two", "positive": "b"},
                                  {"query": "c", "positive": f"x{newline}{newline}y"}]


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    rows = [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d"}]
    path = write_csv(tmp_path / "excel.csv", rows, encoding="utf-8-sig")  # what Excel's "CSV UTF-8" writes
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_records(path) == rows


def test_byte_order_mark_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n', encoding="utf-8-sig")
    assert read_records(path) == [{"query": "a", "positive": "b"}]


def test_ten_megabyte_field(tmp_path):
    big = "word " * (2 * 1024 * 1024)  # 10 MiB in one cell, far over csv's default 128 KiB limit
    rows = [{"query": "long one", "positive": big}, {"query": "short", "positive": "x"}]
    records = read_records(write_csv(tmp_path / "d.csv", rows))
    assert records == rows
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert read_records(tmp_path / "d.jsonl") == records


def test_excel_style_quoting(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"He said ""hi"", then left",a\n"a, b and c",b\n"""",c\n5" screen,d\n', encoding="utf-8")
    assert [r["text"] for r in read_records(path)] == ['He said "hi", then left', "a, b and c", '"', '5" screen']


def test_quirky_csv_reads_like_jsonl(tmp_path):
    texts = ['quote " inside', "comma, inside", "new\nline", "crlf\r\ninside", "nel\x85ls\u2028ps\u2029", "tab\tinside",
             "  spaces kept by the reader  ", "émoji 🙂 and ümlauts", "=1+1"]
    rows = [{"text": t, "label": str(i)} for i, t in enumerate(texts)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_records(write_csv(tmp_path / "d.csv", rows)) == read_records(tmp_path / "d.jsonl") == rows


def test_jsonl_with_unescaped_line_separators(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028/U+2029/U+0085 raw; they are not line breaks in JSONL."""
    rows = [{"query": "a\u2028b", "positive": "c\u2029d\x85e"}, {"query": "f", "positive": "g"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    assert read_records(path) == rows


def test_jsonl_error_line_numbers_are_physical_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"query": "a\u2028b"}\n\n{oops\n', encoding="utf-8")
    with pytest.raises(TunewiseError, match="line 3 is not valid JSON"):
        read_records(path)


def test_tsv_keeps_commas_and_quoted_tabs(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('query\tpositive\na, b\t"tab\there"\n', encoding="utf-8")
    assert read_records(path) == [{"query": "a, b", "positive": "tab\there"}]


def test_semicolon_separated_file_is_an_error_not_one_column(tmp_path):
    """The reader has no delimiter option: a semicolon file must fail on the columns, naming them."""
    from tunewise.config import DataConfig
    from tunewise.data.retrieval import prepare_retrieval_data

    path = tmp_path / "d.csv"
    path.write_text("query;positive\na;b\nc;d\ne;f\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d.csv: no column 'query' .*columns are: query;positive"):
        prepare_retrieval_data(DataConfig(train=str(path)), seed=0)


def test_unclosed_quote_is_an_error_naming_its_line(tmp_path):
    """Without strict parsing the rest of the file would silently become one value."""
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfine,a\nalso fine,"b\nswallowed,c\nand this,d\n', encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d.csv: the quoted value that starts on line 3 is never closed"):
        read_records(path)


def test_text_after_a_closing_quote_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"5" screen",a\n', encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d.csv: line 2 has text after the closing quote"):
        read_records(path)


def test_more_fields_than_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,b\nc,d,e\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="d.csv: line 3 has more fields than the header; quote values that contain commas"):
        read_records(path)


def test_duplicate_column_name_in_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,label\na,b,c\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="d.csv: the header names column 'label' twice"):
        read_records(path)


def test_empty_trailing_columns_of_a_spreadsheet_export(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,,\na,b,,\nc,d,,\n", encoding="utf-8")
    assert [(r["text"], r["label"]) for r in read_records(path)] == [("a", "b"), ("c", "d")]


def test_non_utf8_offset_is_the_offset_in_the_file(tmp_path):
    path = tmp_path / "d.csv"
    head = "query,positive\n" + "".join(f"q{i},a{i}\n" for i in range(5000))
    path.write_bytes(head.encode() + "café,x\n".encode("latin-1"))
    offset = len(head.encode()) + 3
    with pytest.raises(TunewiseError, match=rf"d.csv: not UTF-8 text \(byte 0xe9 at offset {offset}\)"):
        read_records(path)
