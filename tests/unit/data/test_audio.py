"""Speech data: reading, resampling, (audio, transcript) tables and folders, bad input, augmentation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from tunewise.data.audio import (
    MAX_SECONDS,
    SAMPLE_RATE,
    AudioError,
    AugmentConfig,
    Clip,
    SpeechSet,
    audio_info,
    load_audio,
    make_augmenter,
    read_speech_data,
)
from tunewise.errors import TunewiseError


def tone(seconds: float = 1.0, rate: int = SAMPLE_RATE, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def write(path, samples, rate=SAMPLE_RATE, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, **kw)
    return path


# --- one file -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("clip one.wav", None), ("ljud åäö.flac", None), ("röst 1.ogg", None), ("tal.mp3", "MP3")])
def test_round_trip_formats_with_odd_names(tmp_path, name, fmt):
    path = write(tmp_path / name, tone(0.5), format=fmt) if fmt else write(tmp_path / name, tone(0.5))
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - SAMPLE_RATE // 2) <= SAMPLE_RATE * 0.06  # MP3/OGG pad a little
    assert abs(peak_hz(out) - 440) < 5
    if path.suffix in (".wav", ".flac"):  # lossless: 16-bit quantisation only
        np.testing.assert_allclose(out, tone(0.5), atol=1e-4)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resampled_to_16k(tmp_path, rate):
    out = load_audio(write(tmp_path / f"r{rate}.wav", tone(1.0, rate), rate, subtype="FLOAT"))
    assert len(out) == SAMPLE_RATE
    assert abs(peak_hz(out) - 440) < 2
    assert 0.45 < np.abs(out[1000:-1000]).max() < 0.55  # amplitude kept


def test_stereo_becomes_mono_average(tmp_path):
    left, right = tone(0.5, amp=0.6), tone(0.5, freq=1000, amp=0.2)
    out = load_audio(write(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT"))
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio" * 10)
    with pytest.raises(AudioError, match=r"broken\.wav: cannot read it .*use WAV, FLAC"):
        load_audio(bad)
    with pytest.raises(AudioError, match=r"broken\.wav: cannot read it"):
        audio_info(bad)


def test_empty_audio(tmp_path):
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"empty\.wav: holds no samples"):
        load_audio(empty)
    with pytest.raises(AudioError, match="holds no samples"):
        audio_info(empty)


def test_unusable_sample_rate(tmp_path):
    low = write(tmp_path / "low.wav", tone(0.5, 2000), 2000)
    with pytest.raises(AudioError, match=r"low\.wav: sample rate 2000 Hz is not usable"):
        load_audio(low)


def test_non_finite_samples(tmp_path):
    x = tone(0.2)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(write(tmp_path / "nan.wav", x, subtype="FLOAT"))


# --- tables and folders -----------------------------------------------------------------------


@pytest.fixture
def clips(tmp_path):
    """Three clips of 1.0, 2.0 and 0.5 s under tmp/audio."""
    for name, sec in (("a.wav", 1.0), ("b b.flac", 2.0), ("ö.ogg", 0.5)):
        write(tmp_path / "audio" / name, tone(sec))
    return tmp_path


def test_csv_table(clips):
    (clips / "data.csv").write_text("audio,text\naudio/a.wav,hello\naudio/b b.flac, two words \naudio/ö.ogg,tre\n", encoding="utf-8")
    data = read_speech_data(clips / "data.csv")
    assert [c.text for c in data.clips] == ["hello", "two words", "tre"]
    assert [c.row for c in data.clips] == [1, 2, 3]
    assert data.clips[1].path == (clips / "audio" / "b b.flac").resolve()
    assert data.clips[0].seconds == pytest.approx(1.0) and data.clips[1].seconds == pytest.approx(2.0)
    assert data.total_seconds == pytest.approx(3.5, abs=0.05)
    assert data.hours == pytest.approx(3.5 / 3600, rel=0.02)
    assert data.skipped == [] and data.report()["clips"] == 3


def test_jsonl_and_parquet_with_renamed_columns(clips):
    rows = [{"file": "audio/a.wav", "sentence": "ett"}, {"file": "audio/b b.flac", "sentence": "två"}]
    (clips / "d.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    data = read_speech_data(clips / "d.jsonl", audio_column="file", text_column="sentence")
    assert [c.text for c in data.clips] == ["ett", "två"]
    import pandas as pd

    pd.DataFrame(rows).to_parquet(clips / "d.parquet")
    assert len(read_speech_data(clips / "d.parquet", audio_column="file", text_column="sentence").clips) == 2


def test_root_option(clips, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("tables")
    (elsewhere / "d.csv").write_text("audio,text\na.wav,hej\n", encoding="utf-8")
    data = read_speech_data(elsewhere / "d.csv", root=clips / "audio")
    assert data.clips[0].path == (clips / "audio" / "a.wav").resolve()


def test_folder_with_metadata_file_name(clips):
    folder = clips / "audio"
    (folder / "metadata.csv").write_text("file_name,text\na.wav,one\nö.ogg,two\n", encoding="utf-8")
    data = read_speech_data(folder)
    assert [(c.path.name, c.text) for c in data.clips] == [("a.wav", "one"), ("ö.ogg", "two")]


def test_folder_with_two_tables_is_ambiguous(clips):
    folder = clips / "audio"
    (folder / "metadata.csv").write_text("file_name,text\na.wav,one\n", encoding="utf-8")
    (folder / "transcripts.jsonl").write_text('{"audio": "a.wav", "text": "one"}\n', encoding="utf-8")
    with pytest.raises(TunewiseError, match="several transcript tables"):
        read_speech_data(folder)


def test_folder_with_sidecar_transcripts(clips):
    folder = clips / "audio"
    for name, text in (("a", "first"), ("b b", "second"), ("ö", "third")):
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    data = read_speech_data(folder)
    assert sorted(c.text for c in data.clips) == ["first", "second", "third"]
    (folder / "ö.txt").unlink()
    with pytest.raises(TunewiseError, match=r"ö\.ogg has no transcript ö\.txt"):
        read_speech_data(folder)
    (folder / "ö.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"ö\.txt is empty"):
        read_speech_data(folder)


def test_missing_column(clips):
    (clips / "d.csv").write_text("path,text\naudio/a.wav,hi\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d\.csv: no column 'audio'"):
        read_speech_data(clips / "d.csv")


def test_empty_transcript_is_an_error_even_with_skip(clips):
    (clips / "d.csv").write_text("audio,text\naudio/a.wav,hi\naudio/ö.ogg,\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d\.csv: row 2 has no value in column 'text'|d\.csv: row 2 has an empty 'text'"):
        read_speech_data(clips / "d.csv", on_bad_audio="skip")


def test_missing_audio_file_names_file_and_row(clips):
    (clips / "d.csv").write_text("audio,text\naudio/a.wav,hi\naudio/gone.wav,bye\n", encoding="utf-8")
    with pytest.raises(AudioError, match=r"d\.csv: row 2: audio .*gone\.wav: file not found; .*on_bad_audio=skip"):
        read_speech_data(clips / "d.csv")


@pytest.mark.parametrize("value", ["../outside.wav", "audio/../../outside.wav", "/etc/passwd"])
def test_paths_may_not_escape_the_root(clips, value):
    write(clips.parent / "outside.wav", tone(0.2))
    (clips / "d.csv").write_text(f"audio,text\n{value},hi\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"d\.csv: row 1: audio path .* is outside the data root"):
        read_speech_data(clips / "d.csv", on_bad_audio="skip")


def test_symlink_out_of_the_root(clips, tmp_path_factory):
    outside = write(tmp_path_factory.mktemp("out") / "x.wav", tone(0.2))
    os.symlink(outside, clips / "audio" / "link.wav")
    (clips / "d.csv").write_text("audio,text\naudio/link.wav,hi\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="outside the data root"):
        read_speech_data(clips / "d.csv")


def test_skip_counts_bad_clips(clips):
    (clips / "audio" / "bad.wav").write_bytes(b"garbage" * 20)
    write(clips / "audio" / "empty.wav", np.zeros(0, np.float32))
    (clips / "d.csv").write_text("audio,text\naudio/a.wav,ok\naudio/bad.wav,x\naudio/gone.wav,y\naudio/empty.wav,z\naudio/ö.ogg,ok2\n",
                                 encoding="utf-8")
    with pytest.raises(AudioError, match="row 2: audio .*bad.wav: cannot read it"):
        read_speech_data(clips / "d.csv")
    data = read_speech_data(clips / "d.csv", on_bad_audio="skip")
    assert [c.text for c in data.clips] == ["ok", "ok2"]
    assert [row for row, _ in data.skipped] == [2, 3, 4]
    assert "cannot read it" in data.skipped[0][1] and "file not found" in data.skipped[1][1] and "no samples" in data.skipped[2][1]
    assert data.report()["clips_skipped"] == 3


def test_nothing_usable(clips):
    (clips / "d.csv").write_text("audio,text\naudio/gone.wav,y\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="none of the 1 clips is usable"):
        read_speech_data(clips / "d.csv", on_bad_audio="skip")


def test_long_clips_refused_or_skipped(clips):
    write(clips / "audio" / "long.flac", np.zeros(round((MAX_SECONDS + 1) * SAMPLE_RATE), np.float32))
    (clips / "d.csv").write_text("audio,text\naudio/a.wav,ok\naudio/long.flac,too long\n", encoding="utf-8")
    with pytest.raises(AudioError, match=r"row 2: audio .*long\.flac: 31\.0 s is longer than Whisper's 30 s window.*long_audio=skip"):
        read_speech_data(clips / "d.csv")
    with pytest.raises(AudioError, match="longer than"):
        read_speech_data(clips / "d.csv", on_bad_audio="skip")  # long audio is governed by long_audio only
    data = read_speech_data(clips / "d.csv", long_audio="skip")
    assert [c.text for c in data.clips] == ["ok"] and data.skipped[0][0] == 2


def test_bad_options(clips):
    (clips / "d.csv").write_text("audio,text\naudio/a.wav,ok\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="on_bad_audio: unknown value 'skipp'.*did you mean 'skip'"):
        read_speech_data(clips / "d.csv", on_bad_audio="skipp")
    with pytest.raises(TunewiseError, match="long_audio: unknown value 'truncate'"):
        read_speech_data(clips / "d.csv", long_audio="truncate")
    with pytest.raises(TunewiseError, match="speech data: not found"):
        read_speech_data(clips / "missing.csv")


def test_speechset_values():
    s = SpeechSet([Clip(__import__("pathlib").Path("a.wav"), "x", 1800.0, 1), Clip(__import__("pathlib").Path("b.wav"), "y", 1800.0, 2)])
    assert s.total_seconds == 3600.0 and s.hours == 1.0


# --- augmentation --------------------------------------------------------------------------------


def speechlike(seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, round(seconds * SAMPLE_RATE))
    return (tone(seconds, freq=220, amp=0.3) + tone(seconds, freq=660, amp=0.1) + noise).astype(np.float32)


def test_augmenter_is_deterministic_by_seed_and_changes_audio():
    cfg = AugmentConfig(noise_snr_db=10, speed=0.1, pitch_semitones=2, p=1.0)
    x = speechlike()
    a, b, c = make_augmenter(cfg, 7), make_augmenter(cfg, 7), make_augmenter(cfg, 8)
    outs_a = [a(x) for _ in range(3)]
    outs_b = [b(x) for _ in range(3)]
    for u, v in zip(outs_a, outs_b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(outs_a[0], outs_a[1])  # a new draw per call
    assert not np.array_equal(c(x), outs_a[0])  # another seed, other audio
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outs_a)
    assert all(o.shape != x.shape or not np.allclose(o, x) for o in outs_a)


def test_augmenter_leaves_global_generators_alone():
    import random

    random.seed(1)
    np.random.seed(1)
    want_py, want_np = random.random(), np.random.rand()
    random.seed(1)
    np.random.seed(1)
    make_augmenter(AugmentConfig(noise_snr_db=5, pitch_semitones=1, p=1.0), 0)(speechlike(0.3))
    assert (random.random(), np.random.rand()) == (want_py, want_np)


def test_each_transform_alone():
    x = speechlike()
    fast = make_augmenter(AugmentConfig(speed=0.2, p=1.0), 0)(x)
    assert len(fast) != len(x) and abs(len(fast) / len(x) - 1) <= 0.21  # speed changes the length
    noisy = make_augmenter(AugmentConfig(noise_snr_db=0, p=1.0), 0)(x)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert 0 - 0.5 <= snr <= 20 + 0.5 and noisy.shape == x.shape
    shift = make_augmenter(AugmentConfig(pitch_semitones=4, p=1.0), 3)
    peaks = [peak_hz(out) for out in (shift(x) for _ in range(4))]
    assert max(abs(p - 220) for p in peaks) > 10  # up to 4 semitones: 220 Hz -> 175..277 Hz


def test_disabled_augmenter_is_identity():
    x = speechlike(0.2)
    assert make_augmenter(AugmentConfig(), 0)(x) is x
    assert make_augmenter(AugmentConfig(noise_snr_db=10, p=0.0), 0)(x) is x
    out = make_augmenter(AugmentConfig(noise_snr_db=10, p=0.5), 0)
    results = [out(x) for _ in range(20)]
    assert any(np.array_equal(r, x) for r in results) and any(not np.array_equal(r, x) for r in results)


@pytest.mark.parametrize("kw, option", [
    ({"speed": 0.7}, "augment.speed"), ({"speed": 0}, "augment.speed"), ({"pitch_semitones": -1}, "augment.pitch_semitones"),
    ({"noise_snr_db": 100}, "augment.noise_snr_db"), ({"p": 1.5}, "augment.p"), ({"speed": "fast"}, "augment.speed"),
    ({"noise_snr_db": float("nan")}, "augment.noise_snr_db"),
])
def test_bad_augment_values(kw, option):
    with pytest.raises(TunewiseError, match=option.replace(".", r"\.")):
        AugmentConfig(**kw)
