"""Config loading: types, unknown keys with suggestions, dotted overrides."""

from __future__ import annotations

import pytest

from tunewise.config import RunConfig, apply_override, dump_config, from_dict, load_config
from tunewise.errors import TunewiseError


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.task == "embedding" and cfg.strategy == {"name": "full"}
    assert cfg.eval.k == [20] and cfg.eval.primary == "mrr@20"


def test_unknown_key_suggests_closest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epocs: 2\n")
    with pytest.raises(TunewiseError, match=r"unknown config key 'train.epocs' \(did you mean 'epochs'\?\)"):
        load_config(path)


def test_top_level_unknown_key():
    with pytest.raises(TunewiseError, match="did you mean 'model'"):
        from_dict(RunConfig, {"modle": "x"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"epochs": "three"}}, r"train.epochs: expected float, got str 'three'"),
        ({"train": {"batch_size": 1.5}}, r"train.batch_size: expected int"),
        ({"eval": {"k": [0]}}, r"eval.k: every k must be a positive integer"),
        ({"eval": {"k": 5}}, r"eval.k: expected a list"),
        ({"train": {"batch_size": 0}}, r"train.batch_size: must be at least 1"),
        ({"data": {"eval_fraction": 1.5}}, r"data.eval_fraction"),
        ({"eval": {"primary": "mrr"}}, r"eval.primary"),
        ({"data": {"eval_queries": "q.csv"}}, r"go together"),
        ({"eval": {"confidence": 1.0}}, r"eval.confidence: must be between 0 and 1 \(exclusive\)"),
        ({"eval": {"confidence": 0}}, r"eval.confidence: must be between 0 and 1"),
        ({"eval": {"resamples": 99}}, r"eval.resamples: must be an integer of at least 100"),
    ],
)
def test_invalid_values(data, message):
    with pytest.raises(TunewiseError, match=message) as err:
        from_dict(RunConfig, data)
    assert "\n" not in str(err.value)  # one line, naming the option


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train: a.csv\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["train.epochs=1", "train.learning_rate=1e-5", "eval.k=[1, 10]", "strategy=full"])
    assert cfg.train.epochs == 1.0 and cfg.train.learning_rate == 1e-5 and cfg.eval.k == [1, 10]
    assert cfg.data.train == "a.csv"


def test_values_keep_strings_that_look_like_numbers():
    cfg = load_config(None, values={"data.train": "1e-5", "output_dir": "yes"})
    assert cfg.data.train == "1e-5" and cfg.output_dir == "yes"


def test_strategy_shorthand_and_options():
    data: dict = {"strategy": "full"}
    apply_override(data, "strategy.rank=8")
    assert data["strategy"] == {"name": "full", "rank": 8}


def test_bad_override_syntax():
    with pytest.raises(TunewiseError, match="--set: expected key=value"):
        load_config(None, ["train.epochs"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "data.columns.query=question"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(TunewiseError, match="bad.yaml"):
        load_config(path)


def test_empty_learning_rate_follows_the_strategy_and_an_explicit_one_wins():
    assert load_config(None).train.learning_rate == 5e-5
    assert load_config(None, ["strategy=lora"]).train.learning_rate == 1e-3
    assert load_config(None, ["strategy=lora", "train.learning_rate=2e-4"]).train.learning_rate == 2e-4
    cfg = load_config(None)
    cfg.set_strategy({"name": "qlora"})
    assert cfg.train.learning_rate == 1e-3
    explicit = load_config(None, ["train.learning_rate=3e-5"])
    explicit.set_strategy({"name": "lora"})
    assert explicit.train.learning_rate == 3e-5
