"""Speech synthesis (eSpeak NG through ctypes) and the speech demo's corpus: terms, sentences, split, general set."""

from __future__ import annotations

import csv
import importlib.util
import re

import numpy as np
import pytest
import soundfile as sf

from tunewise.data import speech_synth as S
from tunewise.data.audio import SAMPLE_RATE, read_speech_data
from tunewise.errors import TunewiseError

needs_espeak = pytest.mark.skipif(not S.espeak_available(), reason="espeakng-loader is not installed")
needs_faq = pytest.mark.skipif(importlib.util.find_spec("zaragoza_construction_faq") is None, reason="packaged FAQ not installed")


@needs_espeak
def test_synthesize_gives_16k_float_speech():
    a = S.synthesize("The building permit arrived on Monday.")
    assert a.dtype == np.float32 and a.ndim == 1
    assert 1.0 < len(a) / SAMPLE_RATE < 5.0
    assert 0.05 < np.abs(a).max() <= 1.0
    slow = S.synthesize("The building permit arrived on Monday.", rate=120)
    assert len(slow) > len(a) * 1.2  # fewer words per minute, longer audio
    other = S.synthesize("The building permit arrived on Monday.", voice="en-us+f3", pitch=70)
    assert not np.array_equal(other[: len(a)], a[: len(other)])
    again = S.synthesize("The building permit arrived on Monday.")
    assert abs(len(again) - len(a)) < 0.01 * len(a)  # eSpeak NG varies by a few samples from call to call


@needs_espeak
@pytest.mark.parametrize("kw, match", [({"voice": "xx-nope"}, "unknown eSpeak voice 'xx-nope'"), ({"rate": 10}, "rate 10 is outside"),
                                       ({"pitch": 150}, "pitch 150 is outside")])
def test_synthesize_bad_values(kw, match):
    with pytest.raises(TunewiseError, match=match):
        S.synthesize("hello", **kw)


def test_synthesize_empty_text():
    with pytest.raises(TunewiseError, match="empty text"):
        S.synthesize("   ")


def test_missing_espeak_names_the_install(monkeypatch):
    monkeypatch.setattr(S, "espeak_available", lambda: False)
    S._library.cache_clear()
    try:
        with pytest.raises(TunewiseError, match="pip install espeakng-loader"):
            S.synthesize("hello")
    finally:
        S._library.cache_clear()


# --- corpus pieces (pure) -------------------------------------------------------------------

EN = [
    {"q": "What is a bygglov?", "a": "A bygglov is granted by the municipality (building permit). It costs 25,000 SEK in Helsingborg."},
    {"q": "Who issues the startbesked for an attefallshus?",
     "a": "The building committee issues the startbesked before any work on the attefallshus starts."},
    {"q": "Is a bygglov needed for a small attefallshus in Helsingborg?", "a": "No, but a notification is needed."},
]
SV = [{"q": "Vad är bygglov och startbesked?", "a": "Ett attefallshus i Helsingborg kräver anmälan, information."}]


def fake_pieces(word: str) -> int:
    return 1 if word.lower() in {"what", "is", "information", "needed", "small"} else 3  # pretend BPE


def test_swedish_terms_from_both_languages():
    terms = S.swedish_terms(EN, SV, pieces=fake_pieces)
    assert {"bygglov", "startbesked", "attefallshus", "Helsingborg"} <= terms
    assert "municipality" not in terms  # not in the Swedish text
    assert "information" not in terms  # one BPE token: everyday English


def test_faq_sentences_drop_asides_and_unspeakable_text():
    sentences = dict(S.faq_sentences(EN, {"bygglov", "startbesked", "attefallshus", "Helsingborg"}))
    assert "A bygglov is granted by the municipality." in sentences  # "(building permit)" dropped
    assert not any("25,000" in s for s in sentences)  # digits are read differently than written
    assert "What is a bygglov?" not in sentences  # fewer than 6 words
    assert sentences["Is a bygglov needed for a small attefallshus in Helsingborg?"] == ("Helsingborg", "attefallshus", "bygglov")
    assert all(terms for terms in sentences.values())


def test_split_by_sentence_is_disjoint_and_covers_terms():
    vocab = [f"term{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    sentences = []
    for i in range(60):
        terms = tuple(sorted(set(rng.choice(vocab, size=2).tolist())))
        sentences.append((f"Sentence number {i} about {' and '.join(terms)}.", terms))
    train, held_out = S.split_by_sentence(sentences, 30, 10, seed=1)
    assert len(train) == 30 and len(held_out) == 10
    assert not {s for s, _ in train} & {s for s, _ in held_out}
    train_terms = [t for _, ts in train for t in ts]
    for _, ts in held_out:
        for t in ts:
            assert train_terms.count(t) >= 2, t
    assert S.split_by_sentence(sentences, 30, 10, seed=1) == (train, held_out)  # seeded


# --- the corpus and the general set -----------------------------------------------------------


@needs_espeak
@needs_faq
def test_demo_corpus_small(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "TRAIN_SENTENCES", 6)
    monkeypatch.setattr(S, "EVAL_SENTENCES", 3)
    monkeypatch.setenv(S.GENERAL_ENV, str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    seen = []
    corpus = S.demo_speech_corpus(tmp_path / "corpus", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6 * S.TRAIN_VOICINGS + 3 * S.EVAL_VOICINGS,) * 2
    train, held_out = read_speech_data(corpus.train), read_speech_data(corpus.eval)
    assert len(train.clips) == 6 * S.TRAIN_VOICINGS and len(held_out.clips) == 3 * S.EVAL_VOICINGS
    assert not {c.text for c in train.clips} & {c.text for c in held_out.clips}  # split by sentence
    train_text = " ".join(c.text for c in train.clips)
    for term in corpus.terms:
        assert re.search(rf"\b{re.escape(term)}\b", train_text), term
    assert all(1.0 < c.seconds < 12 for c in train.clips)
    assert corpus.general is None and any("does not exist" in n for n in corpus.notes)
    again = S.demo_speech_corpus(tmp_path / "corpus", progress=lambda *a: pytest.fail("rebuilt"))  # cached
    assert again.train == corpus.train
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def fake_pocketsphinx(folder):
    lib = folder / "usr/share/pocketsphinx/test/data/librivox"
    lib.mkdir(parents=True)
    lines = []
    for i, text in enumerate(["he was not an ill disposed young man", "he might even have been made amiable himself"]):
        sf.write(str(lib / f"clip-{i}.wav"), np.zeros(8000, np.float32) + 0.01, 16000)
        lines.append(f"<s> {text} </s> (clip-{i})")
    (lib / "transcription").write_text("\n".join(lines) + "\n")
    return lib


def test_general_set_from_env_pocketsphinx(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    fake_pocketsphinx(tmp_path / "pst")
    monkeypatch.setenv(S.GENERAL_ENV, str(tmp_path / "pst"))
    path, note = S.general_speech_set()
    assert path == tmp_path / "cache" / "speech-general" / "general.csv" and "LibriVox" in note
    data = read_speech_data(path)
    assert [c.text for c in data.clips] == ["he was not an ill disposed young man", "he might even have been made amiable himself"]


def test_general_set_from_env_csv_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "mine.csv"
    with mine.open("w", newline="") as fh:
        csv.writer(fh).writerows([["audio", "text"], ["a.wav", "hi"]])
    monkeypatch.setenv(S.GENERAL_ENV, str(mine))
    assert S.general_speech_set()[0] == mine
    monkeypatch.setenv(S.GENERAL_ENV, str(tmp_path / "nothing"))
    path, note = S.general_speech_set()
    assert path is None and "does not exist" in note


def test_general_set_absent_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(S.GENERAL_ENV, raising=False)
    monkeypatch.setattr(S, "_SYSTEM_POCKETSPHINX", tmp_path / "no-system-copy")
    path, note = S.general_speech_set()
    assert path is None and "apt-get download pocketsphinx-testdata" in note and S.GENERAL_ENV in note
    fake_pocketsphinx(tmp_path / "cache" / "pocketsphinx-testdata")  # unpacked where the note says
    path, note = S.general_speech_set()
    assert path is not None and len(read_speech_data(path).clips) == 2


def test_term_recall():
    refs = ["Skatteverket's rules for ROT and ROT.", "An attefallshus in Skåne."]
    hyps = ["scattered bracket rules for rot and rut", "An Attefallshus in Skåne!"]
    # ref 1: skatteverket (missed; 's is split off), rot x2 (one found); ref 2: attefallshus, skåne (both found)
    assert S.term_recall(refs, hyps, {"Skatteverket", "ROT", "attefallshus", "Skåne"}) == (3, 5)
    assert S.term_recall([], [], {"x"}) == (0, 0)
    with pytest.raises(ValueError):
        S.term_recall(["a"], [], {"a"})
