"""The ``speech:`` config section: audio data, language and task, augmentation, decoding, freezing.

Read by the ``speech-recognition`` task (:mod:`tunewise.tasks.speech`). Everything here is
checked when the config loads; what depends on the checkpoint (an English-only model asked for
another language, or to translate) is checked by the task before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunewise.config import register_section
from tunewise.errors import TunewiseError, did_you_mean

WHISPER_TASKS = ("transcribe", "translate")
PARTIAL_STACKS = ("decoder", "encoder")


def language_code(language: str | None, option: str = "speech.language") -> str | None:
    """Whisper's code for ``language`` (a code such as ``sv`` or a name such as ``swedish``); None stays None.

    Raises:
        TunewiseError: a language Whisper does not know (with the closest ones).
    """
    if language is None:
        return None
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    value = str(language).strip().lower()
    if value in TO_LANGUAGE_CODE.values():
        return value
    if value in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[value]
    known = sorted(set(TO_LANGUAGE_CODE.values()) | set(TO_LANGUAGE_CODE))
    raise TunewiseError(f"{option}: Whisper has no language '{language}'{did_you_mean(value, known)}; "
                        "give a code such as en, sv, de or a name such as swedish")


@dataclass
class SpeechConfig:
    """Speech recognition (task: speech-recognition): audio data, language, augmentation, decoding."""

    eval: str | None = field(default=None, metadata={"help": "Held-out (audio, transcript) data in the same layout as data.train; empty: "
        "data.eval_fraction (or data.eval_size) of data.train, seeded. Hold out other sentences than you train on, or the score "
        "measures memorised sentences."})
    root: str | None = field(default=None, metadata={"help": "Folder that audio paths resolve inside (default: the data file's folder); "
        "paths escaping it are rejected."})
    audio_column: str = field(default="audio", metadata={"help": "Column of audio file paths (WAV, FLAC, MP3, OGG; any rate, mixed to mono, "
        "resampled to 16 kHz)."})
    text_column: str = field(default="text", metadata={"help": "Column of transcripts."})
    language: str | None = field(default=None, metadata={"help": "Language of the audio (code or name: sv, swedish). Multilingual checkpoints "
        "need it (training labels and generation start with its token); English-only ones (*.en, the packaged tiny.en) take none or en."})
    task: str = field(default="transcribe", metadata={"help": "transcribe (same language) or translate (to English; multilingual checkpoints)."})
    on_bad_audio: str = field(default="error", metadata={"help": "An unreadable, empty or undecodable clip: error (one line naming file and "
        "row) or skip (counted in the data report)."})
    long_audio: str = field(default="refuse", metadata={"help": "A clip over Whisper's 30 s window: refuse (error) or skip (counted). "
        "Truncating would keep words in the transcript that the audio no longer has."})
    noise_snr_db: float | None = field(default=None, metadata={"help": "Augmentation (training audio only): add noise at an SNR drawn from "
        "[value, value + 20] dB; empty: off."})
    speed: float | None = field(default=None, metadata={"help": "Augmentation: speed perturbation by a factor in [1 - value, 1 + value]; "
        "empty: off."})
    pitch_semitones: float | None = field(default=None, metadata={"help": "Augmentation: pitch shift of up to this many semitones; empty: off."})
    augment_p: float = field(default=0.5, metadata={"help": "Augmentation: probability of each enabled transform per clip and epoch."})
    max_new_tokens: int = field(default=128, metadata={"help": "Evaluation: tokens generated per clip at most (Whisper's decoder holds 448)."})
    num_beams: int = field(default=1, metadata={"help": "Evaluation: beam width (1 = greedy, the fastest)."})
    eval_batch_size: int = field(default=8, metadata={"help": "Evaluation: clips transcribed per generate() call."})
    cache_encoder: bool = field(default=True, metadata={"help": "While the encoder is frozen (and without augmentation), compute its outputs "
        "once per clip and reuse them across epochs and between the before/after evaluations (same results, about half the "
        "compute for partial with the encoder frozen); false: recompute every step."})
    partial_layers: str = field(default="decoder", metadata={"help": "Which stack strategy partial's frozen_layers / frozen_fraction count in: "
        "decoder (the whole encoder, the decoder's token and position embeddings and its first N layers stay frozen; frozen_layers: 0 "
        "= the encoder frozen, the usual choice for little data) or encoder (the convolution stem and the first N encoder layers stay "
        "frozen; the decoder trains and counts as the head)."})

    def __post_init__(self) -> None:
        self.language = language_code(self.language)
        for name, value, choices in (("task", self.task, WHISPER_TASKS), ("on_bad_audio", self.on_bad_audio, ("error", "skip")),
                                     ("long_audio", self.long_audio, ("refuse", "skip")),
                                     ("partial_layers", self.partial_layers, PARTIAL_STACKS)):
            if value not in choices:
                raise TunewiseError(f"speech.{name}: unknown '{value}'{did_you_mean(str(value), choices)}; use {' or '.join(choices)}")
        for name in ("max_new_tokens", "num_beams", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise TunewiseError(f"speech.{name}: must be at least 1, got {getattr(self, name)}")
        if self.max_new_tokens > 444:
            raise TunewiseError(f"speech.max_new_tokens: {self.max_new_tokens} does not fit Whisper's 448 decoder positions; use at most 444")
        self.augment()  # validates the augmentation fields (one message per field)

    def augment(self):
        """The augmentation settings as :class:`tunewise.data.audio.AugmentConfig` (errors name ``speech.<field>``)."""
        from tunewise.data.audio import AugmentConfig

        try:
            return AugmentConfig(noise_snr_db=self.noise_snr_db, speed=self.speed, pitch_semitones=self.pitch_semitones, p=self.augment_p)
        except TunewiseError as err:
            text = str(err).replace("augment.p", "speech.augment_p").replace("augment.", "speech.")
            raise TunewiseError(text) from None


register_section("speech", SpeechConfig)
