"""A diverged run is an error, not a result: nothing is published, the message says what to try."""

from __future__ import annotations

import json

import pytest

import tunewise
from tunewise.config import load_config
from tunewise.errors import TunewiseError


def test_diverged_embedding_run_publishes_nothing(tiny_st_model, pairs_file, tmp_path):
    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}",
                             "train.epochs=2", "train.batch_size=8", "train.learning_rate=1e30"])
    with pytest.raises(TunewiseError, match="training diverged.*nothing was saved.*Lower train.learning_rate"):
        tunewise.fit(cfg)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.*"))


def test_metrics_json_is_strict_json(tmp_path):
    from tunewise.files import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {"a": None, "b": [None, 1.5]}
