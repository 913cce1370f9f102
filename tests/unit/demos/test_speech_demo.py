"""The speech demo: its entry, its config (the corpus's own held-out sentences) and a run end to end.

The corpus builder and the packaged tiny.en are replaced by synthetic clips and a tiny random
Whisper (tests never synthesise speech or convert weights); the real demo runs in the test
marked ``slow`` and ``integration``.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from tunewise.demos import DEMOS, demo_config, run_demo
from tunewise.tasks import TASKS

from tiny_models import build_tiny_whisper, write_speech_csv  # noqa: E402

QUIET = Console(quiet=True)
TRAIN = [f"apply for a detaljplan {w}" for w in ("now", "today", "soon", "later", "first", "again")]
HELD = ["the attefallshus rules", "ask skatteverket first"]


@pytest.fixture()
def fake_corpus(tmp_path, monkeypatch):
    from tunewise.data import speech_synth

    folder = tmp_path / "corpus"
    train = write_speech_csv(folder, TRAIN, seconds=0.5, name="train.csv")
    held = write_speech_csv(folder, HELD, seconds=0.5, seed=1, name="eval.csv")
    corpus = speech_synth.DemoCorpus(train, held, None, ["synthetic test clips"])
    monkeypatch.setattr(speech_synth, "demo_speech_corpus", lambda *a, **k: corpus)
    return corpus


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny"))


def test_entry_and_config_hold_out_the_corpus_eval_sentences(fake_corpus):
    demo = DEMOS.get("speech")
    assert demo.task == "speech-recognition" and TASKS.get(demo.task).spec.primary == "wer"
    cfg = demo_config(name="speech")
    assert cfg.data.train == str(fake_corpus.train) and cfg.speech.eval == str(fake_corpus.eval)
    assert cfg.strategy == {"name": "partial", "frozen_layers": 0}  # the encoder frozen
    assert cfg.model is None  # the packaged tiny.en
    assert demo.folder() == "runs/demo-speech" and demo.folder(budget=True) == "runs/demo-speech-budget"


def test_demo_runs_and_reports_wer_before_after_with_examples(fake_corpus, tiny_whisper, tmp_path):
    import torch

    torch.set_num_threads(1)
    result = run_demo("speech", output_dir=str(tmp_path / "run"), console=QUIET,
                      overrides=[f"model={tiny_whisper}", "train.epochs=1", "speech.max_new_tokens=4", "eval.resamples=200"])
    m = result.metrics
    assert m["task"] == "speech-recognition" and m["primary_metric"] == "wer"
    assert m["data"]["train_clips"] == len(TRAIN) and m["data"]["eval_clips"] == len(HELD)
    assert m["data"]["eval_transcripts_in_train"] == 0
    assert {e["expected"] for e in m["examples"]["before"]} == set(HELD)
    assert len(m["items"]["wer"]["after"]) == len(HELD)
    assert (result.output_dir / "transcripts.json").is_file() and m["memory"]["peak_mib"] > 0


@pytest.mark.slow
def test_budget_on_the_demo_sweeps_clips_lower_is_better(fake_corpus, tiny_whisper, tmp_path):
    import torch

    torch.set_num_threads(1)
    result = run_demo("speech", budget=True, output_dir=str(tmp_path / "budget"), console=QUIET,
                      overrides=[f"model={tiny_whisper}", "train.epochs=1", "speech.max_new_tokens=4", "eval.resamples=200"],
                      sweep={"sizes": [3, 6], "seeds": 1, "fresh": True})
    assert (tmp_path / "budget").is_dir() and result is not None


@pytest.mark.slow
@pytest.mark.integration
def test_the_real_demo_lowers_held_out_wer(tmp_path):
    """Packaged tiny.en on the synthesised corpus (converts and synthesises on first use; minutes on 2 cores)."""
    result = run_demo("speech", output_dir=str(tmp_path / "run"), console=QUIET)
    m = result.metrics
    assert m["after"]["wer"] < m["before"]["wer"]
    assert m["data"]["eval_transcripts_in_train"] == 0
