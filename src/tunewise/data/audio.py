"""Speech data: audio files read and resampled, (audio, transcript) tables validated, augmentation.

Reading: ``soundfile`` (libsndfile 1.1+, bundled in its wheels) reads WAV, FLAC, OGG
(Vorbis/Opus), MP3 and the other formats ``soundfile.available_formats()`` lists. Every clip
becomes float32 mono (channels averaged) at 16 kHz, resampled with ``soxr`` (the SoX resampler,
"HQ" quality).

Sources for :func:`read_speech_data`:

* a CSV/JSONL/Parquet file with an audio-path column (default ``audio``) and a transcript
  column (default ``text``); relative paths resolve inside ``root`` (default: the file's folder);
* a folder of audio files with ONE transcript table in it, named ``metadata.csv`` /
  ``metadata.jsonl`` / ``metadata.parquet`` (or ``transcripts.*``): as Hugging Face's
  ``audiofolder``, the audio column may also be called ``file_name``;
* a folder of audio files each with a sidecar transcript ``<same name>.txt`` (LibriSpeech-like
  corpora flattened, recorder apps that save notes beside the audio).

A path that escapes the root (``../x.wav``, an absolute path elsewhere, a symlink out) is refused.

What counts as bad, and what happens:

* unreadable, empty, missing audio or an unusable sample rate: one-line error naming the file
  and row (``on_bad_audio="error"``), or the row is skipped and counted (``"skip"``);
* a clip longer than Whisper's 30 s window: refused by default (``long_audio="refuse"``), because
  Whisper's feature extractor would silently cut it at 30 s while the transcript still holds the
  words of the cut part, teaching the model to invent text; ``long_audio="skip"`` drops and counts
  such clips. Truncating is not offered: the transcript cannot be cut to match without an
  alignment. Split long recordings into <= 30 s clips with their own transcripts;
* an empty or missing transcript is always an error, also with ``on_bad_audio="skip"``: it is a
  labelling mistake in the table (not an audio fault) and an empty target would teach the model
  to output nothing.

Rows are numbered from 1 (the first data row), as in every tunewise error message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.errors import TunewiseError, did_you_mean

SAMPLE_RATE = 16_000
MAX_SECONDS = 30.0
# Below 4 kHz no speech band survives (telephone audio is 8 kHz); above 384 kHz is not audio.
MIN_RATE, MAX_RATE = 4_000, 384_000
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"}
TABLE_NAMES = ("metadata", "transcripts")
TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
BAD_AUDIO_CHOICES = ("error", "skip")
LONG_AUDIO_CHOICES = ("refuse", "skip")


class AudioError(TunewiseError):
    """An audio file that cannot be used (missing, unreadable, empty, bad sample rate, too long)."""


# ---------------------------------------------------------------------------------------
# one file


def _soundfile():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - depends on the environment
        raise TunewiseError('audio: reading audio needs soundfile: pip install "tunewise[speech]"') from None
    return soundfile


def audio_info(path: Path) -> tuple[float, int]:
    """``(seconds, sample_rate)`` of an audio file from its header (no full decode).

    Raises:
        AudioError: missing, unreadable, empty, or a sample rate outside 4 kHz..384 kHz.
    """
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio {path}: file not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"audio {path}: cannot read it ({_reason(err)}); {_formats_hint()}") from None
    _check_rate(path, info.samplerate)
    if info.frames <= 0:
        raise AudioError(f"audio {path}: holds no samples (empty audio); remove it or record it again")
    return info.frames / info.samplerate, int(info.samplerate)


def load_audio(path: Path) -> np.ndarray:
    """An audio file as float32 mono samples at 16 kHz.

    Channels are averaged; other sample rates are resampled with soxr (HQ).

    Args:
        path: a WAV/FLAC/OGG/MP3/... file.

    Returns:
        ``(samples,)`` float32 array in [-1, 1] (for integer sources).

    Raises:
        AudioError: missing, unreadable, empty, non-finite samples, or an unusable sample rate.
    """
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio {path}: file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(f"audio {path}: cannot read it ({_reason(err)}); {_formats_hint()}") from None
    _check_rate(path, rate)
    if data.shape[0] == 0:
        raise AudioError(f"audio {path}: holds no samples (empty audio); remove it or record it again")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"audio {path}: holds NaN or infinite samples; re-export it")
    return resample(mono, int(rate), SAMPLE_RATE)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` (mono) from ``rate`` Hz to ``target`` Hz with soxr (HQ), as float32."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == target:
        return samples
    import soxr

    return np.ascontiguousarray(soxr.resample(samples, rate, target, quality="HQ"), dtype=np.float32)


def _check_rate(path: Path, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"audio {path}: sample rate {rate} Hz is not usable (need {MIN_RATE}..{MAX_RATE} Hz; "
                         f"speech is resampled to {SAMPLE_RATE} Hz); re-export it at 16 kHz")


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__).removeprefix("Error opening ").strip()


def _formats_hint() -> str:
    return "use WAV, FLAC, OGG (Vorbis/Opus) or MP3"


# ---------------------------------------------------------------------------------------
# (audio, transcript) data


@dataclass(frozen=True)
class Clip:
    """One usable (audio, transcript) pair."""

    path: Path
    text: str
    seconds: float
    row: int  # 1-based data row in the table (or position in a sidecar folder)


@dataclass
class SpeechSet:
    """Validated clips and what was skipped: ``(row, reason)`` pairs."""

    clips: list[Clip]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(c.seconds for c in self.clips))

    @property
    def hours(self) -> float:
        return self.total_seconds / 3600.0

    def report(self) -> dict:
        """Counts for metrics/run reports: clips, hours, skipped rows (first three reasons)."""
        return {"clips": len(self.clips), "audio_hours": round(self.hours, 4), "audio_seconds": round(self.total_seconds, 2),
                "clips_skipped": len(self.skipped), "skipped_examples": [f"row {r}: {why}" for r, why in self.skipped[:3]]}


def read_speech_data(path: Path, *, root: Path | None = None, audio_column: str = "audio", text_column: str = "text",
                     on_bad_audio: str = "error", long_audio: str = "refuse") -> SpeechSet:
    """Read and validate (audio, transcript) pairs from a table or a folder.

    Args:
        path: a CSV/JSONL/Parquet file, or a folder (see the module docstring for layouts).
        root: the folder audio paths resolve in and may not leave (default: the table's folder).
        audio_column: column of audio paths (in a folder's metadata table ``file_name`` also works).
        text_column: column of transcripts.
        on_bad_audio: ``error`` (stop at the first bad clip) or ``skip`` (drop and count it).
        long_audio: ``refuse`` (error for a clip over 30 s) or ``skip`` (drop and count it).

    Returns:
        The clips (with measured durations) and the skipped ``(row, reason)`` pairs.

    Raises:
        TunewiseError: a bad option, missing file or column, empty transcript, a path outside
            the root, bad audio with ``on_bad_audio="error"``, a long clip with ``refuse``,
            or no usable clip at all.
    """
    if on_bad_audio not in BAD_AUDIO_CHOICES:
        raise TunewiseError(f"on_bad_audio: unknown value '{on_bad_audio}'{did_you_mean(on_bad_audio, BAD_AUDIO_CHOICES)}; "
                            f"choose one of: {', '.join(BAD_AUDIO_CHOICES)}")
    if long_audio not in LONG_AUDIO_CHOICES:
        raise TunewiseError(f"long_audio: unknown value '{long_audio}'{did_you_mean(long_audio, LONG_AUDIO_CHOICES)}; "
                            f"choose one of: {', '.join(LONG_AUDIO_CHOICES)} (clips over {MAX_SECONDS:g} s cannot be truncated "
                            "to match their transcript)")
    source = Path(path).expanduser()
    if not source.exists():
        raise TunewiseError(f"speech data: not found: {source}")
    if source.is_dir():
        table = _folder_table(source)
        base = source
        rows = _sidecar_rows(source) if table is None else _table_rows(table, audio_column, text_column, folder=True)
        where = table if table is not None else source
    else:
        base, where = source.parent, source
        rows = _table_rows(source, audio_column, text_column, folder=False)
    base = (Path(root).expanduser() if root is not None else base).resolve()
    if not base.is_dir():
        raise TunewiseError(f"audio root: not a folder: {base}")

    clips: list[Clip] = []
    skipped: list[tuple[int, str]] = []
    for row, value, text in rows:
        audio = resolve_audio(base, value, f"{where}: row {row}")
        try:
            seconds, _ = audio_info(audio)
        except AudioError as err:
            if on_bad_audio == "error":
                raise AudioError(f"{where}: row {row}: {err}; fix or remove it, or set on_bad_audio=skip") from None
            skipped.append((row, str(err)))
            continue
        if seconds > MAX_SECONDS:
            reason = (f"audio {audio}: {seconds:.1f} s is longer than Whisper's {MAX_SECONDS:g} s window (the feature "
                      "extractor would cut it silently while the transcript keeps all its words)")
            if long_audio == "refuse":
                raise AudioError(f"{where}: row {row}: {reason}; split it into clips of <= {MAX_SECONDS:g} s, "
                                 "or set long_audio=skip")
            skipped.append((row, reason))
            continue
        clips.append(Clip(audio, text, float(seconds), row))
    if not clips:
        example = f" (e.g. row {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise TunewiseError(f"{where}: none of the {len(rows)} clips is usable{example}")
    return SpeechSet(clips, skipped)


def resolve_audio(root: Path, value: str, where: str) -> Path:
    """``root / value`` resolved (symlinks followed); it must stay inside ``root``."""
    from tunewise.files import inside_root

    return inside_root(root, value, where, kind="audio", fix="keep audio inside it or set the audio root to a folder that holds it")


def _folder_table(folder: Path) -> Path | None:
    found = [folder / f"{n}{s}" for n in TABLE_NAMES for s in TABLE_SUFFIXES if (folder / f"{n}{s}").is_file()]
    if len(found) > 1:
        raise TunewiseError(f"speech data: {folder} holds several transcript tables ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _table_rows(table: Path, audio_column: str, text_column: str, *, folder: bool) -> list[tuple[int, str, str]]:
    from tunewise.data.readers import read_records, require_columns, text_value

    records = read_records(table, option="speech data")
    if folder and audio_column not in records[0] and "file_name" in records[0]:
        audio_column = "file_name"  # Hugging Face audiofolder's metadata column
    require_columns(records, {"audio": audio_column, "text": text_column}, table)
    rows = []
    for i, record in enumerate(records):
        rows.append((i + 1, text_value(record, audio_column, i, table), text_value(record, text_column, i, table)))
    return rows


def _sidecar_rows(folder: Path) -> list[tuple[int, str, str]]:
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not audio:
        names = " or ".join(f"{n}.csv" for n in TABLE_NAMES)
        raise TunewiseError(f"speech data: {folder} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) and no {names}")
    rows = []
    for i, file in enumerate(audio):
        sidecar = file.with_suffix(".txt")
        if not sidecar.is_file():
            raise TunewiseError(f"speech data: {file} has no transcript {sidecar.name} beside it; add one, or list "
                                f"clips and transcripts in {folder / 'metadata.csv'} (columns file_name,text)")
        text = sidecar.read_text(encoding="utf-8").strip()
        if not text:
            raise TunewiseError(f"speech data: transcript {sidecar} is empty; fill it or remove the clip")
        rows.append((i + 1, str(file.relative_to(folder)), text))
    return rows


# ---------------------------------------------------------------------------------------
# augmentation (training audio only, on the fly)


@dataclass
class AugmentConfig:
    """Training-audio augmentation; each enabled transform is applied with probability ``p``.

    Attributes:
        noise_snr_db: add Gaussian noise at a signal-to-noise ratio drawn from [snr, snr + 20] dB
            (audiomentations ``AddGaussianSNR``); lower is noisier. None: off.
        speed: speed perturbation (Ko et al. 2015): play at a factor drawn from [1 - speed, 1 + speed]
            (tempo and pitch change together, as tape does), by resampling with soxr. None: off.
        pitch_semitones: shift the pitch by up to this many semitones either way, tempo kept
            (audiomentations ``PitchShift`` with signalsmith-stretch). None: off.
        p: probability of each enabled transform per clip.
    """

    noise_snr_db: float | None = None
    speed: float | None = None
    pitch_semitones: float | None = None
    p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("noise_snr_db", "speed", "pitch_semitones", "p"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise TunewiseError(f"augment.{name}: expected a number, got {value!r}")
        if self.noise_snr_db is not None and not -10 <= self.noise_snr_db <= 60:
            raise TunewiseError(f"augment.noise_snr_db: {self.noise_snr_db} dB is outside -10..60 (e.g. 10 for audible noise)")
        if self.speed is not None and not 0 < self.speed < 0.5:
            raise TunewiseError(f"augment.speed: {self.speed} must be a relative change in (0, 0.5), e.g. 0.1 for 0.9x..1.1x")
        if self.pitch_semitones is not None and not 0 < self.pitch_semitones <= 12:
            raise TunewiseError(f"augment.pitch_semitones: {self.pitch_semitones} must be in (0, 12], e.g. 2")
        if not 0 <= self.p <= 1:
            raise TunewiseError(f"augment.p: {self.p} must be a probability in [0, 1]")

    @property
    def enabled(self) -> bool:
        return self.p > 0 and any(v is not None for v in (self.noise_snr_db, self.speed, self.pitch_semitones))


def make_augmenter(cfg: AugmentConfig, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A seeded function that augments 16 kHz float32 mono audio (identity when nothing is enabled).

    Two augmenters made with the same config and seed give the same outputs for the same
    sequence of inputs. audiomentations draws from Python's and NumPy's global generators, so
    each call seeds them from the augmenter's own generator and restores their state after.
    """
    if not cfg.enabled:
        return lambda samples: samples
    from audiomentations import AddGaussianSNR, PitchShift

    rng = np.random.default_rng(seed)
    noise = AddGaussianSNR(min_snr_db=cfg.noise_snr_db, max_snr_db=cfg.noise_snr_db + 20.0, p=1.0) if cfg.noise_snr_db is not None else None
    # signalsmith-stretch (python-stretch, an audiomentations dependency) sounds cleaner than librosa's phase vocoder
    pitch = (PitchShift(min_semitones=-cfg.pitch_semitones, max_semitones=cfg.pitch_semitones, p=1.0, method="signalsmith_stretch")
             if cfg.pitch_semitones is not None else None)

    def augment(samples: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(samples, dtype=np.float32)
        call_seed = int(rng.integers(2**31 - 1))
        draws = rng.random(3)
        if cfg.speed is not None and draws[0] < cfg.p:
            factor = float(rng.uniform(1.0 - cfg.speed, 1.0 + cfg.speed))
            out = resample(out, round(SAMPLE_RATE * factor), SAMPLE_RATE)  # factor x faster: len / factor
        chosen = [t for t, d in ((pitch, draws[1]), (noise, draws[2])) if t is not None and d < cfg.p]
        if chosen:
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                random.seed(call_seed)
                np.random.seed(call_seed)
                for transform in chosen:
                    out = transform(samples=out, sample_rate=SAMPLE_RATE)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        return np.ascontiguousarray(out, dtype=np.float32)

    return augment
