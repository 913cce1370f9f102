"""Offline speech synthesis with eSpeak NG (``espeakng-loader``), a data generator for demos and tests.

``espeakng-loader`` (pip, 10 MB) bundles ``libespeak-ng`` and its voice data but no program, so
the library is called through ``ctypes``: ``espeak_Initialize`` (synchronous mode, 22,050 Hz),
``espeak_SetSynthCallback`` (collects the 16-bit samples), ``espeak_SetVoiceByName`` and
``espeak_SetParameter`` (rate, pitch), ``espeak_Synth``. The library is GPL-3.0+: tunewise only
calls it to make audio, it does not ship it (install it with ``pip install espeakng-loader``).

The library keeps global state, so calls are serialised with a lock.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import functools
import json
import os
import random
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.errors import TunewiseError

_PIP = "pip install espeakng-loader"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3
_EE_OK = 0
_LOCK = threading.Lock()
# eSpeak's documented ranges (espeak_SetParameter): words per minute, and pitch 0..100.
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 99)

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_chunks: list[np.ndarray] = []


def _collect(wav, count, _events) -> int:
    if count > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0  # 0: go on synthesising


_callback = _CALLBACK(_collect)  # kept referenced for the library's lifetime


def espeak_available() -> bool:
    """Whether ``espeakng-loader`` is installed (without loading the library)."""
    import importlib.util

    return importlib.util.find_spec("espeakng_loader") is not None


@functools.cache
def _library() -> tuple[ctypes.CDLL, int]:
    """The initialised library and its sample rate."""
    if not espeak_available():
        raise TunewiseError(f"speech synthesis needs espeakng-loader: {_PIP}")
    import espeakng_loader

    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as err:
        raise TunewiseError(f"speech synthesis: cannot load eSpeak NG from espeakng-loader ({err}); reinstall it: {_PIP}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                 ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
    if rate <= 0:
        raise TunewiseError(f"speech synthesis: eSpeak NG failed to start with its data in {data}; reinstall it: {_PIP}")
    lib.espeak_SetSynthCallback(_callback)
    return lib, int(rate)


def synthesize(text: str, *, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with eSpeak NG; float32 mono at 16 kHz.

    Args:
        text: what to say (UTF-8; words of other languages are read with the voice's rules).
        voice: an eSpeak voice, optionally with a variant: ``en-us``, ``en-gb``, ``en-us+f3``, ``en+m7``.
        rate: words per minute (80..450).
        pitch: base pitch (0..99; 50 is the voice's normal pitch).

    Returns:
        ``(samples,)`` float32 in [-1, 1] at :data:`tunewise.data.audio.SAMPLE_RATE`.

    Raises:
        TunewiseError: espeakng-loader is missing, an unknown voice, a value out of range, or no audio.
    """
    from tunewise.data.audio import SAMPLE_RATE, resample

    if not text or not text.strip():
        raise TunewiseError("speech synthesis: empty text")
    if not RATE_RANGE[0] <= int(rate) <= RATE_RANGE[1]:
        raise TunewiseError(f"speech synthesis: rate {rate} is outside {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute")
    if not PITCH_RANGE[0] <= int(pitch) <= PITCH_RANGE[1]:
        raise TunewiseError(f"speech synthesis: pitch {pitch} is outside {PITCH_RANGE[0]}..{PITCH_RANGE[1]}")
    lib, native = _library()
    encoded = text.strip().encode("utf-8")
    with _LOCK:
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise TunewiseError(f"speech synthesis: unknown eSpeak voice '{voice}' (e.g. en-us, en-gb, en-us+f3, en+m7)")
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        _chunks.clear()
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
        _chunks.clear()
    if status != _EE_OK or samples.size == 0:
        raise TunewiseError(f"speech synthesis: eSpeak NG produced no audio for {text[:40]!r} (status {status})")
    return resample(samples.astype(np.float32) / 32768.0, native, SAMPLE_RATE)


# ---------------------------------------------------------------------------------------
# the speech demo's corpus: construction-FAQ sentences with Swedish terms, spoken by eSpeak

CORPUS_VERSION = 1
CORPUS_NAME = f"speech-demo-v{CORPUS_VERSION}"
GENERAL_ENV = "TUNEWISE_GENERAL_SPEECH"
_SYSTEM_POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")  # apt-get install pocketsphinx-testdata
_DONE_MARKER = "tunewise-built.json"
# (voice+variant) pool: accents and speaker variants eSpeak NG ships; each clip draws one.
VOICES = ("en-us", "en-us+f3", "en+m3", "en-gb-x-rp+f2", "en-gb-scotland+m7", "en-029+f4", "en-us-nyc+m1", "en-us+f5")
TRAIN_SENTENCES, EVAL_SENTENCES = 80, 25
TRAIN_VOICINGS, EVAL_VOICINGS = 3, 2  # clips per sentence
MIN_WORDS, MAX_WORDS = 6, 20
_UNSPEAKABLE = re.compile(r"[0-9§%/&:;²³+=@#\[\]\"()*<>|~^_{}\\]")  # digits and symbols read aloud differ from the text


@dataclass
class DemoCorpus:
    """The speech demo's data: CSV files ``audio,text`` (paths relative to each file's folder).

    Attributes:
        train: training clips (sentences never in ``eval``).
        eval: held-out sentences, spoken by voices drawn from the same pool.
        general: real human speech for measuring forgetting (LibriVox clips), or None.
        notes: what was built and how, and why ``general`` is missing when it is.
        terms: the Swedish domain terms the eval sentences hold (each also in training sentences).
    """

    train: Path
    eval: Path
    general: Path | None
    notes: list[str] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)


def swedish_terms(english: list[dict], swedish: list[dict], pieces: Callable[[str], int] | None = None) -> set[str]:
    """Domain terms: words of the English FAQ that also occur in the Swedish FAQ and are not common English.

    A word counts when it occurs in both language versions (a Swedish term or name kept in the
    English text: bygglov, Skatteverket, Helsingborg, ROT) and either holds å/ä/ö or is not one
    token of Whisper's English BPE vocabulary in any capitalisation (common English words such
    as "information" or "via", which also occur in Swedish text, are single tokens).

    Args:
        english, swedish: FAQ rows (``q``, ``a``).
        pieces: number of BPE tokens of ``" " + word``; default: the packaged tiny.en tokenizer.
    """
    if pieces is None:
        pieces = _packaged_bpe_pieces()

    def words(rows: list[dict]) -> list[str]:
        return [w for r in rows for w in re.findall(r"[^\W\d_]+", f"{r['q']} {r['a']}")]

    sv = {w.lower() for w in words(swedish)}
    terms = set()
    for word in set(words(english)):
        if len(word) < 3 or word.lower() not in sv:
            continue
        if re.search(r"[åäöÅÄÖ]", word) or min(pieces(word), pieces(word.lower()), pieces(word.capitalize())) >= 2:
            terms.add(word)
    return terms


def _packaged_bpe_pieces() -> Callable[[str], int]:
    from tokenizers import Tokenizer

    from tunewise.models.whisper import packaged_model_dir

    tokenizer = Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json"))
    return lambda word: len(tokenizer.encode(" " + word, add_special_tokens=False).ids)


def faq_sentences(english: list[dict], terms: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Speakable sentences of the English FAQ that hold at least one term: ``(sentence, terms)``.

    Parenthesised asides are dropped (they are glosses like "(building permit)"); sentences
    with digits or symbols are left out, because what a synthesiser says for "25,000-50,000"
    or "m²" is not what the transcript says.
    """
    seen: set[str] = set()
    out = []
    for row in english:
        for text in (row["q"], row["a"]):
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                sentence = re.sub(r"\s+", " ", re.sub(r"\s*\([^)]*\)", "", sentence)).strip()
                sentence = re.sub(r"\s+([,.!?])", r"\1", sentence)
                if not sentence or _UNSPEAKABLE.search(sentence) or not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                    continue
                found = tuple(sorted({w for w in re.findall(r"[^\W\d_]+", sentence) if w in terms}))
                key = sentence.lower()
                if found and key not in seen:
                    seen.add(key)
                    out.append((sentence, found))
    return out


def split_by_sentence(sentences: list[tuple[str, tuple[str, ...]]], n_train: int, n_eval: int,
                      seed: int = 0) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, tuple[str, ...]]]]:
    """Held-out sentences whose every term also occurs in at least two training sentences.

    A gain on the held-out sentences can then come from learning how the terms sound, not from
    remembering whole sentences (no held-out sentence is in training).

    Returns:
        ``(train, eval)`` lists of ``(sentence, terms)``.
    """
    pool = sorted(sentences)
    random.Random(seed).shuffle(pool)
    term_count = Counter(t for _, ts in pool for t in ts)
    eval_set: list[tuple[str, tuple[str, ...]]] = []
    for item in pool:
        if len(eval_set) >= n_eval:
            break
        if all(term_count[t] >= 3 for t in item[1]):  # this one, plus >= 2 left for training
            eval_set.append(item)
            for t in item[1]:
                term_count[t] -= 1
    rest = [item for item in pool if item not in eval_set]
    needed = Counter({t: 2 for _, ts in eval_set for t in ts})
    train: list[tuple[str, tuple[str, ...]]] = []
    for item in rest:  # first the sentences that teach held-out terms, then any others
        if len(train) < n_train and any(needed[t] > 0 for t in item[1]):
            train.append(item)
            needed.subtract(item[1])
    for item in rest:
        if len(train) >= n_train:
            break
        if item not in train:
            train.append(item)
    return train, eval_set


def term_recall(references: list[str], hypotheses: list[str], terms: list[str] | set[str]) -> tuple[int, int]:
    """How many domain-term occurrences of the references the hypotheses spell right: ``(found, total)``.

    Case and punctuation are ignored (``Skatteverket's`` counts as ``skatteverket``); an
    occurrence is found when the hypothesis holds the term as a word at least as often as the
    reference does. This isolates what the demo is about (learning Swedish terms) from the
    overall WER, which also moves when the model adapts to the synthetic voices.
    """
    wanted = {t.lower() for t in terms}

    def words(text: str) -> Counter:
        return Counter(w for w in re.findall(r"[^\W_]+", text.lower()) if w in wanted)

    found = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_terms, hyp_terms = words(ref), words(hyp)
        total += sum(ref_terms.values())
        found += sum(min(n, hyp_terms[t]) for t, n in ref_terms.items())
    return found, total


def demo_speech_corpus(cache_dir: Path | None = None, *, progress: Callable[[int, int], None] | bool | None = None,
                       seed: int = 0) -> DemoCorpus:
    """The speech demo's train/eval clips, synthesised once and cached (about 300 clips, 1-2 min).

    Args:
        cache_dir: the corpus folder; default ``cache_root() / "speech-demo-v1"``.
        progress: None shows a progress bar on stderr; a callable gets ``(done, total)``; False is silent.
        seed: draws the split and the voices.

    Returns:
        The corpus; ``general`` is found afresh on every call (see :func:`general_speech_set`).

    Raises:
        TunewiseError: espeakng-loader or the packaged FAQ is missing.
    """
    from tunewise.files import cache_root

    folder = Path(cache_dir) if cache_dir is not None else cache_root() / CORPUS_NAME
    if not ((folder / _DONE_MARKER).is_file() and (folder / "train.csv").is_file()):
        _build_corpus(folder, progress, seed)
    built = json.loads((folder / _DONE_MARKER).read_text(encoding="utf-8"))
    general, general_note = general_speech_set()
    notes = list(built["notes"]) + [general_note]
    return DemoCorpus(folder / "train.csv", folder / "eval.csv", general, notes, list(built["terms"]))


def _build_corpus(folder: Path, progress: Callable[[int, int], None] | bool | None, seed: int) -> None:
    import soundfile as sf

    from tunewise.data.audio import SAMPLE_RATE
    from tunewise.data.packaged import load_faq

    english, swedish = load_faq("en"), load_faq("sv")
    terms = swedish_terms(english, swedish)
    train, held_out = split_by_sentence(faq_sentences(english, terms), TRAIN_SENTENCES, EVAL_SENTENCES, seed)
    rng = random.Random(seed + 1)
    jobs = []  # (split, index, sentence, voice, rate, pitch)
    for split, items, voicings in (("train", train, TRAIN_VOICINGS), ("eval", held_out, EVAL_VOICINGS)):
        for sentence, _ in items:
            for voice in rng.sample(VOICES, voicings):
                jobs.append((split, len([j for j in jobs if j[0] == split]), sentence, voice, rng.randint(150, 200), rng.randint(35, 65)))

    from tunewise.files import publish_folder, staging_folder

    tmp = staging_folder(folder)
    for split in ("train", "eval"):
        (tmp / "audio" / split).mkdir(parents=True)
    rows: dict[str, list[dict]] = {"train": [], "eval": []}
    start = time.perf_counter()
    with _progress(progress, len(jobs)) as advance:
        for split, index, sentence, voice, rate, pitch in jobs:
            samples = synthesize(sentence, voice=voice, rate=rate, pitch=pitch)
            name = f"audio/{split}/{index:04d}.wav"
            sf.write(str(tmp / name), samples, SAMPLE_RATE, subtype="PCM_16")
            rows[split].append({"audio": name, "text": sentence, "voice": voice, "rate": rate, "pitch": pitch,
                                "seconds": round(len(samples) / SAMPLE_RATE, 3)})
            advance()
    seconds = time.perf_counter() - start
    for split, items in rows.items():
        with (tmp / f"{split}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(items[0]))
            writer.writeheader()
            writer.writerows(items)
    eval_terms = sorted({t for _, ts in held_out for t in ts})
    train_text = " ".join(s for s, _ in train)
    covered = sum(1 for t in eval_terms if re.search(rf"\b{re.escape(t)}\b", train_text))

    def summary(split: str) -> str:
        durations = [r["seconds"] for r in rows[split]]
        return (f"{split}: {len(durations)} clips of {len({r['text'] for r in rows[split]})} sentences, "
                f"{sum(durations) / 60:.1f} min ({min(durations):.1f}-{max(durations):.1f} s per clip)")

    notes = [
        "speech demo data: English sentences of the packaged construction FAQ that hold Swedish terms, "
        f"spoken by eSpeak NG ({len(VOICES)} voices, 150-200 words/min, pitch 35-65); synthesised in {seconds:.0f} s",
        summary("train"), summary("eval"),
        f"split by sentence: no held-out sentence is in training; {covered}/{len(eval_terms)} Swedish terms of the "
        "held-out sentences also occur in training sentences",
    ]
    (tmp / _DONE_MARKER).write_text(json.dumps({"version": CORPUS_VERSION, "seed": seed, "notes": notes, "terms": eval_terms,
                                                "synthesis_seconds": round(seconds, 1)}, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")
    publish_folder(tmp, folder)


@contextlib.contextmanager
def _progress(progress: Callable[[int, int], None] | bool | None, total: int):
    if callable(progress):
        done = [0]

        def advance() -> None:
            done[0] += 1
            progress(done[0], total)

        yield advance
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, disable=progress is False, console=Console(stderr=True)) as bar:
        task = bar.add_task("synthesising the speech demo's clips (once)", total=total)
        yield lambda: bar.advance(task)


# ---------------------------------------------------------------------------------------
# real human speech for measuring forgetting


def general_speech_set() -> tuple[Path | None, str]:
    """A general-speech set (``audio,text`` CSV) and a note saying where it came from, or why there is none.

    Looked for, in order: ``$TUNEWISE_GENERAL_SPEECH`` (a speech data file or folder that
    :func:`tunewise.data.audio.read_speech_data` reads, or a pocketsphinx test-data folder);
    Debian's ``pocketsphinx-testdata`` unpacked into ``cache_root()/pocketsphinx-testdata``
    (``apt-get download pocketsphinx-testdata && dpkg -x pocketsphinx-testdata_*.deb <that folder>``)
    or installed in ``/usr/share/pocketsphinx/test/data``. Its five LibriVox clips (BSD-2) are
    copied with their transcripts into ``cache_root()/speech-general``.
    """
    from tunewise.files import cache_root

    env = os.environ.get(GENERAL_ENV, "").strip()
    if env:
        given = Path(env).expanduser()
        found = _pocketsphinx_librivox(given)
        if found is None and given.exists():
            return given, f"general speech: {given} (from ${GENERAL_ENV})"
        if found is None:
            return None, f"general speech: ${GENERAL_ENV} points to {given}, which does not exist; forgetting is not measured"
        candidates = [given]
    else:
        candidates = [cache_root() / "pocketsphinx-testdata", _SYSTEM_POCKETSPHINX]
    for base in candidates:
        librivox = _pocketsphinx_librivox(base)
        if librivox is not None:
            return _copy_librivox(librivox, cache_root() / "speech-general"), (
                f"general speech: LibriVox clips of pocketsphinx-testdata ({librivox}), real read speech for measuring forgetting")
    return None, ("general speech: none found, so forgetting is not measured. For LibriVox clips: "
                  "cd /tmp && apt-get download pocketsphinx-testdata && "
                  f"dpkg -x pocketsphinx-testdata_*.deb {cache_root() / 'pocketsphinx-testdata'} "
                  f"(or set ${GENERAL_ENV} to your own audio,text CSV)")


def _pocketsphinx_librivox(base: Path) -> Path | None:
    for folder in (base / "librivox", base / "usr/share/pocketsphinx/test/data/librivox", base):
        if (folder / "transcription").is_file() and any(folder.glob("*.wav")):
            return folder
    return None


def _copy_librivox(source: Path, target: Path) -> Path:
    """``target/general.csv`` with the clips of a pocketsphinx ``librivox`` folder (copied once)."""
    csv_path = target / "general.csv"
    if csv_path.is_file():
        return csv_path
    rows = []
    for line in (source / "transcription").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if match and (source / f"{match.group(2)}.wav").is_file():
            rows.append((f"{match.group(2)}.wav", match.group(1).strip()))
    from tunewise.files import publish_folder, staging_folder

    tmp = staging_folder(target)
    for name, _ in rows:
        shutil.copyfile(source / name, tmp / name)
    with (tmp / "general.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["audio", "text"])
        writer.writerows(rows)
    publish_folder(tmp, target)
    return csv_path
