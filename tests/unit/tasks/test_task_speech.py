"""The speech-recognition task on tiny random Whisper models and synthetic clips (never downloaded)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import TunewiseError

from tiny_models import build_tiny_whisper, write_speech_csv  # noqa: E402

QUIET = Console(quiet=True)
TEXTS = [f"the roof permit {w}" for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")]


@pytest.fixture(scope="module")
def whisper_en(tmp_path_factory):
    return str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-en"))


@pytest.fixture(scope="module")
def whisper_multi(tmp_path_factory):
    return str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-multi", multilingual=True))


@pytest.fixture(scope="module")
def speech_csv(tmp_path_factory):
    return str(write_speech_csv(tmp_path_factory.mktemp("speech"), TEXTS, seconds=0.5))


def config(tmp_path, model, data, **values):
    base = {"task": "asr", "model": model, "output_dir": str(tmp_path / "run"), "overwrite": True, "data.train": data,
            "data.eval_size": 3, "train.epochs": 1, "train.batch_size": 4, "train.learning_rate": 1e-3,
            "speech.max_new_tokens": 4, "eval.resamples": 200}
    return load_config(None, values={**base, **values})


def task_for(cfg):
    from tunewise.tasks import TASKS

    task = TASKS.get(cfg.task)()
    return task


# ---- what the task declares


def test_spec_direction_alias_and_refusals():
    from tunewise.tasks import TASKS

    spec = TASKS.get("asr").spec
    assert spec.name == "speech-recognition" and spec.unit == "clips" and spec.primary == "wer"
    assert spec.higher_is_better("wer") is False and spec.higher_is_better("cer") is False
    with pytest.raises(TunewiseError, match="strategy head: Whisper's output is a token sequence"):
        spec.check_strategy("head")
    cfg = load_config(None, values={"task": "speech-recognition"})
    assert cfg.eval.primary == "wer" and cfg.strategy == {"name": "full"}


@pytest.mark.parametrize(("values", "needle"), [
    ({"speech.language": "klingon"}, "speech.language: Whisper has no language 'klingon'"),
    ({"speech.task": "summarise"}, "speech.task: unknown 'summarise'"),
    ({"speech.on_bad_audio": "ignore"}, "speech.on_bad_audio: unknown 'ignore'"),
    ({"speech.partial_layers": "middle"}, "speech.partial_layers: unknown 'middle'"),
    ({"speech.speed": 0.9}, "speech.speed: 0.9 must be a relative change"),
    ({"speech.max_new_tokens": 1000}, "speech.max_new_tokens: 1000 does not fit"),
])
def test_bad_speech_options_fail_when_the_config_loads(values, needle):
    with pytest.raises(TunewiseError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, values={"task": "asr", **values})


def test_language_names_become_codes():
    assert load_config(None, values={"task": "asr", "speech.language": "Swedish"}).speech.language == "sv"


def test_english_only_checkpoint_rules(tmp_path, whisper_en, whisper_multi, speech_csv):
    from tunewise.run import check_config

    with pytest.raises(TunewiseError, match="English-only Whisper checkpoint and cannot transcribe 'sv'"):
        check_config(config(tmp_path, whisper_en, speech_csv, **{"speech.language": "sv"}))
    with pytest.raises(TunewiseError, match="speech.task: .* English-only .* cannot translate"):
        check_config(config(tmp_path, whisper_en, speech_csv, **{"speech.task": "translate"}))
    with pytest.raises(TunewiseError, match="speech.language: .* multilingual Whisper checkpoint; set the language"):
        check_config(config(tmp_path, whisper_multi, speech_csv))
    with pytest.raises(TunewiseError, match="speech.language: .* English-only"):  # the packaged tiny.en, without converting it
        check_config(load_config(None, values={"task": "asr", "speech.language": "de"}))
    check_config(config(tmp_path, whisper_en, speech_csv, **{"speech.language": "en"}))
    check_config(config(tmp_path, whisper_multi, speech_csv, **{"speech.language": "sv", "speech.task": "translate"}))


def test_a_text_model_is_refused(tmp_path, tiny_bert, speech_csv):
    from tunewise.run import check_config

    with pytest.raises(TunewiseError, match="is a text model .*task speech-recognition needs a speech model"):
        check_config(config(tmp_path, str(tiny_bert), speech_csv))


# ---- data and labels


def test_labels_prefix_and_collator(tmp_path, whisper_en, whisper_multi, speech_csv):
    from tunewise.tasks.speech_batches import SpeechCollator

    cfg = config(tmp_path, whisper_en, speech_csv)
    task = task_for(cfg)
    data = task.prepare_data(cfg)
    tok = data.processor.tokenizer
    sot, eot, nots = (tok.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>"))
    first = data.train_labels[0]
    assert first[:2] == [sot, nots] and first[-1] == eot  # English-only: no language or task token
    assert tok.decode(first, skip_special_tokens=True) == data.train[0].text
    assert data.report["train_clips"] == 5 and data.report["eval_clips"] == 3 and data.report["eval_transcripts_in_train"] == 0
    assert data.report["train_hours"] == pytest.approx(5 * 0.5 / 3600, abs=1e-4)

    batch = SpeechCollator(sot)([{"input_features": __import__("numpy").zeros((80, 3000)), "labels": [sot, nots, 7, eot]},
                                 {"input_features": __import__("numpy").zeros((80, 3000)), "labels": [sot, nots, eot]}])
    assert batch["input_features"].shape == (2, 80, 3000)
    assert batch["labels"].tolist() == [[nots, 7, eot], [nots, eot, -100]]  # start token dropped, padding ignored by the loss

    cfg = config(tmp_path, whisper_multi, speech_csv, **{"speech.language": "sv"})
    data = task_for(cfg).prepare_data(cfg)
    tok = data.processor.tokenizer
    assert data.train_labels[0][:4] == [sot, tok.convert_tokens_to_ids("<|sv|>"), tok.convert_tokens_to_ids("<|transcribe|>"),
                                         tok.convert_tokens_to_ids("<|notimestamps|>")]


def test_held_out_file_and_leak_report(tmp_path, whisper_en, speech_csv):
    held = write_speech_csv(tmp_path / "held", [TEXTS[0], "a new sentence"], seconds=0.5, name="held.csv")
    cfg = config(tmp_path, whisper_en, speech_csv, **{"speech.eval": str(held)})
    data = task_for(cfg).prepare_data(cfg)
    assert len(data.train) == len(TEXTS) and len(data.eval) == 2
    assert data.report["eval_transcripts_in_train"] == 1  # the same sentence on both sides is counted


def test_missing_audio_names_file_and_row(tmp_path, whisper_en):
    bad = tmp_path / "bad.csv"
    bad.write_text("audio,text\nnowhere.wav,hello there\n", encoding="utf-8")
    cfg = config(tmp_path, whisper_en, str(bad))
    with pytest.raises(TunewiseError, match="row 1"):
        task_for(cfg).prepare_data(cfg)


# ---- strategies over the task's capabilities


def _trainable(model, prefix):
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)}


def test_partial_freezes_the_encoder_or_its_first_layers(tmp_path, whisper_en, speech_csv):
    from tunewise.run import check_config

    cfg = config(tmp_path, whisper_en, speech_csv, strategy={"name": "partial", "frozen_layers": 0})
    task, strategy, options = check_config(cfg)
    model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
    assert not _trainable(model, "model.encoder.")  # the whole encoder is frozen
    assert not _trainable(model, "model.decoder.embed_tokens")  # (tied to the output projection)
    assert _trainable(model, "model.decoder.layers.0.") and _trainable(model, "model.decoder.layers.1.")

    cfg = config(tmp_path, whisper_en, speech_csv, strategy={"name": "partial", "frozen_layers": 1},
                 **{"speech.partial_layers": "encoder"})
    task, strategy, options = check_config(cfg)
    model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
    assert not _trainable(model, "model.encoder.conv1") and not _trainable(model, "model.encoder.layers.0.")
    assert _trainable(model, "model.encoder.layers.1.") and _trainable(model, "model.decoder.layers.0.")

    cfg = config(tmp_path, whisper_en, speech_csv, strategy={"name": "partial", "frozen_layers": 2},
                 **{"speech.partial_layers": "encoder"})
    task, strategy, options = check_config(cfg)
    model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)  # all encoder layers: the decoder still trains
    assert not _trainable(model, "model.encoder.layers.") and _trainable(model, "model.decoder.layers.1.")


def test_lora_adapts_attention_and_mlp_of_both_stacks(tmp_path, whisper_en, speech_csv):
    from tunewise.run import check_config

    cfg = config(tmp_path, whisper_en, speech_csv, strategy={"name": "lora", "rank": 2})
    task, strategy, options = check_config(cfg)
    model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    stacks = {("encoder" if ".encoder." in n else "decoder") for n, p in model.named_parameters() if p.requires_grad}
    assert stacks == {"encoder", "decoder"}


# ---- end to end


def test_fit_reports_wer_items_examples_and_saves_a_loadable_model(tmp_path, whisper_en, speech_csv):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from tunewise.run import fit

    torch.set_num_threads(1)
    cfg = config(tmp_path, whisper_en, speech_csv, **{"train.epochs": 3, "speech.noise_snr_db": 20})
    result = fit(cfg, console=QUIET)
    m = result.metrics
    assert m["primary_metric"] == "wer" and set(m["before"]) == {"wer", "cer"}
    items = m["items"]["wer"]
    assert len(items["before"]) == 3 and sum(items["after"]) / 3 == pytest.approx(m["after"]["wer"])
    assert m["data"]["train_clips"] == 5 and m["data"]["augmentation"]["noise_snr_db"] == 20
    losses = [h["loss"] for h in m["train"]["history"]]
    assert losses[-1] < losses[0]  # it learns (a random model on 5 clips: the loss falls)
    ex = m["examples"]["before"][0]
    assert {"input", "expected", "output", "wer"} <= set(ex) and ex["expected"] in TEXTS
    out = result.output_dir
    saved = json.loads((out / "transcripts.json").read_text())
    assert len(saved["clips"]) == 3 and {"reference", "before", "after"} <= set(saved["clips"][0])
    WhisperForConditionalGeneration.from_pretrained(out)
    WhisperProcessor.from_pretrained(out)


def test_cli_bad_language_is_one_line_exit_2(tmp_path, whisper_en, speech_csv):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    result = CliRunner().invoke(app, ["fit", "--set", "task=asr", "--set", f"model={whisper_en}", "--set", f"data.train={speech_csv}",
                                      "--set", "speech.language=sv", "--set", f"output_dir={tmp_path / 'r'}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "English-only" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_frozen_encoder_outputs_are_reused_with_the_same_results(tmp_path, whisper_en, speech_csv):
    """partial with the encoder frozen: caching its outputs changes the compute, not the numbers."""
    import torch

    from tunewise.run import fit

    torch.set_num_threads(1)
    runs = {}
    for cache in (True, False):
        cfg = config(tmp_path / str(cache), whisper_en, speech_csv, strategy={"name": "partial", "frozen_layers": 0},
                     **{"train.epochs": 2, "speech.cache_encoder": cache})
        runs[cache] = fit(cfg, console=QUIET).metrics
    losses = {k: [h["loss"] for h in m["train"]["history"]] for k, m in runs.items()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert runs[True]["after"] == pytest.approx(runs[False]["after"])
    assert runs[True]["items"] == runs[False]["items"]


@pytest.mark.slow
def test_wiseft_sweep_scores_blends_by_wer_and_forgetting(tmp_path, whisper_en, speech_csv, monkeypatch):
    import torch

    from tunewise.run import fit
    from tunewise.strategies.options import WiseFTOptions

    torch.set_num_threads(1)
    cfg = config(tmp_path, whisper_en, speech_csv, **{"train.epochs": 2})
    result = fit(cfg, console=QUIET)
    task = task_for(cfg)
    data = task.prepare_data(cfg)
    general = write_speech_csv(tmp_path / "general", ["some general speech", "another sentence"], seconds=0.5, seed=3, name="g.csv")
    sweep = task.wiseft_sweep(cfg, data, result.output_dir, WiseFTOptions(interpolate=[0.0, 1.0], general_data=str(general)))
    rows = {r["alpha"]: r for r in sweep["rows"]}
    assert rows[0.0]["forgetting"] == 0.0  # alpha 0 is the pre-trained model
    assert rows[0.0]["in_domain"] == pytest.approx(result.metrics["before"]["wer"])
    assert rows[1.0]["in_domain"] == pytest.approx(result.metrics["after"]["wer"])
    assert sweep["metric"] == "wer" and sweep["chosen"]["alpha"] in rows and "above the pre-trained" in sweep["rule"]

    from tunewise.data import speech_synth

    monkeypatch.setattr(speech_synth, "general_speech_set", lambda: (None, "general speech: none found (apt-get ...)"))
    with pytest.raises(TunewiseError, match="strategy.general_data: no general-speech set"):
        task.wiseft_sweep(cfg, data, result.output_dir, WiseFTOptions(interpolate=[0.5]))


def test_early_stopping_watches_validation_wer_and_keeps_the_best_step(tmp_path, whisper_en, speech_csv):
    """Validation clips are carved from training; the kept step and why go into metrics.json."""
    import torch

    from tunewise.run import fit

    torch.set_num_threads(1)
    cfg = config(tmp_path, whisper_en, speech_csv, **{"train.epochs": 3, "train.early_stopping_patience": 1,
                                                      "data.validation_fraction": 0.3})
    m = fit(cfg, console=QUIET).metrics
    best = m["early_stopping"]
    assert best is not None and best["metric"] == "wer" and best["best_step"] is not None
    assert m["data"]["validation_clips"] >= 1 and m["data"]["train_clips"] + m["data"]["validation_clips"] == 5
    scores = {h["step"]: h["eval_wer"] for h in m["train"]["history"] if "eval_wer" in h}
    assert scores and best["value"] == pytest.approx(min(scores.values()))  # lower is better: the lowest WER is kept


def test_predict_transcribes_audio_files_of_a_finished_run(tmp_path, whisper_en, speech_csv):
    """`tunewise predict RUN clips.csv`: one transcript per clip, the same as the run's own decoding."""
    import csv
    from pathlib import Path

    import numpy as np
    import soundfile as sf
    import torch

    from tunewise.predict import predict
    from tunewise.run import fit

    torch.set_num_threads(1)
    run = fit(config(tmp_path, whisper_en, speech_csv), console=QUIET).output_dir
    folder = Path(speech_csv).parent
    with open(speech_csv, newline="", encoding="utf-8") as f:
        audio = [str(folder / row["audio"]) for row in csv.DictReader(f)][:2]
    rows = predict(run, audio, progress=False)
    assert len(rows) == 2 and all(isinstance(r["transcript"], str) and r["seconds"] > 0 for r in rows)
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.zeros(16_000 * 31, dtype=np.float32), 16_000)
    with pytest.raises(TunewiseError, match=r"long\.wav is 31\.0 s long"):
        predict(run, [str(long_clip)], progress=False)
