"""Missing labels never become a class: pandas' NA strings, JSON null, empty cells.

The default is an error naming the file, the 1-based data row and the column;
data.on_missing_label: skip leaves such rows out and counts them in the data report, and
keep treats NA strings ("NA", "None", ...) as real class names.
"""

from __future__ import annotations

import json

import pytest

from tunewise.config import DataConfig, load_config
from tunewise.data.labeled import read_text_labeled, split_labeled
from tunewise.data.readers import na_strings
from tunewise.data.retrieval import prepare_retrieval_data
from tunewise.errors import TunewiseError

PANDAS_DEFAULT_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def labeled_rows(n=12):
    return [{"text": f"sample text {i}", "label": ("alpha", "beta", "gamma")[i % 3]} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_csv(path, rows):
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    return str(path)


def test_na_strings_are_pandas_defaults():
    pd_parsers = pytest.importorskip("pandas._libs.parsers")
    assert na_strings() >= set(PANDAS_DEFAULT_NA)
    assert na_strings() >= set(pd_parsers.STR_NA_VALUES)


@pytest.mark.parametrize("na", PANDAS_DEFAULT_NA)
def test_na_string_label_in_csv_is_an_error_naming_file_row_and_fix(tmp_path, na):
    rows = labeled_rows()
    rows[4]["label"] = na
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(TunewiseError) as err:
        read_text_labeled(DataConfig(train=path))
    message = str(err.value)
    assert message.startswith(f"{path}: row 5 has no label in column 'label'")
    assert "set data.on_missing_label: skip" in message and "\n" not in message


def test_json_null_label_is_an_error(tmp_path):
    rows = labeled_rows()
    rows[2]["label"] = None
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(TunewiseError, match=r"t.jsonl: row 3 has no label in column 'label' \(null counts as missing\); "
                                            r"fill it, remove the row, or set data.on_missing_label: skip"):
        read_text_labeled(DataConfig(train=path))


def test_absent_label_key_and_whitespace_label_are_errors(tmp_path):
    rows = labeled_rows()
    del rows[1]["label"]
    with pytest.raises(TunewiseError, match=r"row 2 has no label in column 'label' \(null"):
        read_text_labeled(DataConfig(train=write_jsonl(tmp_path / "a.jsonl", rows)))
    rows = labeled_rows()
    rows[6]["label"] = "   "
    with pytest.raises(TunewiseError, match=r"row 7 has no label in column 'label' \(empty"):
        read_text_labeled(DataConfig(train=write_jsonl(tmp_path / "b.jsonl", rows)))


def test_nan_label_in_parquet_is_an_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = labeled_rows()
    rows[3]["label"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    with pytest.raises(TunewiseError, match=r"t.parquet: row 4 has no label in column 'label'"):
        read_text_labeled(DataConfig(train=str(tmp_path / "t.parquet")))


def test_skip_leaves_rows_out_and_reports_the_count(tmp_path):
    rows = labeled_rows()
    rows[0]["label"], rows[5]["label"], rows[9]["label"] = "N/A", "", "NaN"
    path = write_csv(tmp_path / "t.csv", rows)
    cfg = DataConfig(train=path, on_missing_label="skip")
    texts, labels = read_text_labeled(cfg)
    assert texts == [r["text"] for i, r in enumerate(rows) if i not in (0, 5, 9)]
    assert set(labels) == {"alpha", "beta", "gamma"}
    data = split_labeled(texts, labels, cfg, 0, path)
    assert data.classes == ["alpha", "beta", "gamma"] and data.report["skipped_missing_labels"] == 3


def test_valid_data_reports_zero_skipped(tmp_path):
    path = write_csv(tmp_path / "t.csv", labeled_rows())
    cfg = DataConfig(train=path)
    texts, labels = read_text_labeled(cfg)
    assert labels == [r["label"] for r in labeled_rows()]
    assert split_labeled(texts, labels, cfg, 0, path).report["skipped_missing_labels"] == 0


def test_skip_keeps_original_row_numbers_in_later_errors(tmp_path):
    rows = labeled_rows()
    rows[1]["label"] = "null"
    rows[7]["text"] = ""
    with pytest.raises(TunewiseError, match=r"t.jsonl: row 8 has an empty 'text'"):
        read_text_labeled(DataConfig(train=write_jsonl(tmp_path / "t.jsonl", rows), on_missing_label="skip"))


def test_skip_with_no_label_at_all_is_an_error(tmp_path):
    rows = [{"text": f"t{i}", "label": "NA"} for i in range(4)]
    with pytest.raises(TunewiseError, match=r"t.csv: all 4 rows have a missing label in column 'label'"):
        read_text_labeled(DataConfig(train=write_csv(tmp_path / "t.csv", rows), on_missing_label="skip"))


def test_keep_treats_na_strings_as_class_names(tmp_path):
    rows = labeled_rows()
    for i in (0, 3, 6, 9):
        rows[i]["label"] = "None"  # e.g. a severity scale None / Mild / Severe
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(TunewiseError, match=r"\('None' counts as missing\).*\(or keep, if 'None' is a real class\)"):
        read_text_labeled(DataConfig(train=path))
    _, labels = read_text_labeled(DataConfig(train=path, on_missing_label="keep"))
    assert labels.count("None") == 4
    rows[1]["label"] = ""
    with pytest.raises(TunewiseError, match=r"row 2 has no label in column 'label' \(empty counts as missing\)"):
        read_text_labeled(DataConfig(train=write_csv(tmp_path / "t2.csv", rows), on_missing_label="keep"))


@pytest.mark.parametrize("label", ["none", "n.a.", "0", "false", "NAN label", "nil"])
def test_look_alikes_stay_classes(tmp_path, label):
    rows = labeled_rows()
    rows[0]["label"] = rows[1]["label"] = label
    assert read_text_labeled(DataConfig(train=write_csv(tmp_path / "t.csv", rows)))[1][:2] == [label, label]


def test_on_missing_label_is_validated():
    with pytest.raises(TunewiseError, match=r"data.on_missing_label: unknown 'skp' \(did you mean 'skip'\?\); use error, skip or keep"):
        DataConfig(on_missing_label="skp")


def test_config_override_reaches_data_config():
    assert load_config(None, ["data.on_missing_label=skip", "data.on_invalid_eval=drop"]).data.on_missing_label == "skip"


# -- retrieval's labeled kind uses the same rule --------------------------------------------------


def test_retrieval_labeled_kind_na_label_is_an_error_or_skipped(tmp_path):
    rows = [{"text": f"question {i}", "label": f"topic{i % 4}"} for i in range(24)]
    rows[10]["label"] = "#N/A"
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(TunewiseError, match=r"d.jsonl: row 11 has no label in column 'label' \('#N/A' counts as missing\)"):
        prepare_retrieval_data(DataConfig(train=path, kind="labeled"), seed=0)
    data = prepare_retrieval_data(DataConfig(train=path, kind="labeled", on_missing_label="skip"), seed=0)
    assert data.report["skipped_missing_labels"] == 1 and data.report["items_read"] == 23
    assert "question 10" not in {r["anchor"] for r in data.train} | set(data.eval.queries.values()) | set(data.eval.corpus.values())


def test_pairs_report_has_no_label_count(pairs_file):
    assert "skipped_missing_labels" not in prepare_retrieval_data(DataConfig(train=str(pairs_file)), seed=0).report


# -- missing query/positive text in pairs: one-line errors naming row and column ---------------------


@pytest.mark.parametrize("value", ["", "   ", None, "missing"])
@pytest.mark.parametrize("column", ["query", "positive"])
def test_pairs_with_missing_text_are_errors(tmp_path, column, value):
    rows = [{"query": f"q{i}", "positive": f"a{i}"} for i in range(6)]
    if value == "missing":
        del rows[3][column]
    else:
        rows[3][column] = value
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(TunewiseError) as err:
        prepare_retrieval_data(DataConfig(train=path), seed=0)
    message = str(err.value)
    assert message.startswith(f"{path}: row 4 has ") and f"'{column}'" in message
    assert "fill it or remove the row" in message and "\n" not in message


def test_pairs_csv_short_row_is_an_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("query,positive\na,b\nc\ne,f\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"p.csv: row 2 has no value in column 'positive'; fill it or remove the row"):
        prepare_retrieval_data(DataConfig(train=str(path)), seed=0)


# -- image labels from a CSV/JSONL ------------------------------------------------------------------


def _images(root, n=3):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / f"{i}.png")
    return root


def test_image_csv_missing_label_is_an_error_or_skipped(tmp_path):
    pytest.importorskip("PIL")
    from tunewise.data.images import read_image_records

    root = _images(tmp_path / "imgs")
    (root / "d.csv").write_text("image,label\n0.png,red\n1.png,NaN\n2.png,blue\n", encoding="utf-8")
    cfg = load_config(None, [f"data.train={root / 'd.csv'}"])
    with pytest.raises(TunewiseError, match=r"d.csv: row 2 has no label in column 'label' \('NaN' counts as missing\)"):
        read_image_records(cfg.data, cfg.image, "label")
    cfg = load_config(None, [f"data.train={root / 'd.csv'}", "data.on_missing_label=skip"])
    records = read_image_records(cfg.data, cfg.image, "label")
    assert [p.name for p in records.paths] == ["0.png", "2.png"] and records.targets == ["red", "blue"]
    assert records.report()["skipped_missing_labels"] == 1


def test_image_jsonl_null_label_is_an_error(tmp_path):
    pytest.importorskip("PIL")
    from tunewise.data.images import read_image_records

    root = _images(tmp_path / "imgs")
    write_jsonl(root / "d.jsonl", [{"image": "0.png", "label": "red"}, {"image": "1.png", "label": None}])
    cfg = load_config(None, [f"data.train={root / 'd.jsonl'}"])
    with pytest.raises(TunewiseError, match=r"d.jsonl: row 2 has no label in column 'label' \(null counts as missing\)"):
        read_image_records(cfg.data, cfg.image, "label")
