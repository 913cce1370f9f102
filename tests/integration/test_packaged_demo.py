"""Integration: the packaged MiniLM on the packaged Swedish FAQ (the demo's path, shorter)."""

from __future__ import annotations

import json

import pytest

import tunewise
from tunewise.demos import demo_config
from tunewise.demos.faq import DEMO_TRAIN_PAIRS, faq_pairs_file

pytestmark = pytest.mark.integration


def test_faq_file_is_the_packaged_data():
    rows = [json.loads(line) for line in faq_pairs_file("sv").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 503 and {"query", "positive", "category"} <= set(rows[0])


def test_fine_tuning_minilm_improves_held_out_mrr(tmp_path):
    # 200 of the demo's 400 training pairs, one epoch: enough for a clear gain in ~30 s.
    cfg = demo_config(str(tmp_path / "demo"), overrides=["data.max_train=200", "train.epochs=1"])
    assert cfg.data.eval_size == 503 - DEMO_TRAIN_PAIRS
    result = tunewise.fit(cfg)
    before, after = result.before["mrr@20"], result.after["mrr@20"]
    assert result.metrics["data"]["eval_corpus"] == 503 and result.metrics["data"]["eval_queries"] == 103
    assert after > before + 0.05, (before, after)
    assert result.before["recall@1"] < 0.25  # the pre-trained model is weak on Swedish questions


@pytest.mark.slow
def test_full_demo(tmp_path):
    result = tunewise.fit(demo_config(str(tmp_path / "demo")))
    assert result.after["recall@1"] > result.before["recall@1"] * 1.5
