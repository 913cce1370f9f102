"""Speech recognition (task ``speech-recognition``, alias ``asr``): fine-tune Whisper on your own audio.

Any Whisper checkpoint (a local folder or a hub id; default the packaged tiny.en converted by
:mod:`tunewise.models.whisper`) loads as transformers' ``WhisperForConditionalGeneration`` with
its ``WhisperProcessor``. Data are (audio path, transcript) tables or folders read by
:mod:`tunewise.data.audio` (soundfile decodes WAV/FLAC/OGG/MP3, soxr resamples to 16 kHz mono;
clips over 30 s are refused or skipped, never truncated). One training example is one clip; the
data report counts hours too.

* **Training**: transformers' ``Seq2SeqTrainer``. Log-mel features are computed per clip as the
  batch is drawn, so augmentation (noise, speed, pitch: ``speech.noise_snr_db``, ``speed``,
  ``pitch_semitones``) is applied on the fly, seeded, to training audio only. Labels are the
  tokenizer's prefix (start of transcript, language and task for multilingual checkpoints, no
  timestamps) + transcript + end of text; the collator pads them with -100 and drops the start
  token, which the model prepends itself when it shifts labels into decoder inputs.
* **Evaluation**: batched ``generate()`` (greedy unless ``speech.num_beams``), WER (primary,
  lower is better) and CER after Whisper's text normaliser (:mod:`tunewise.evaluate.wer`), with
  per-clip scores for the paired bootstrap and examples (file, reference, transcript).
  English-only checkpoints get no language or task token; multilingual ones need
  ``speech.language``.
* **Strategies**: ``full``; ``partial`` freezes the encoder and the first N decoder layers
  (``speech.partial_layers: decoder``, default; ``frozen_layers: 0`` freezes just the encoder
  and the decoder's embeddings) or the first N encoder layers (``encoder``); ``lora``/``qlora``
  adapt q/k/v/out projections and fc1/fc2 of both stacks; ``head`` is refused.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.tasks.base import TASKS, MemoryProfile, Metric, TaskSpec, TrainStats
from tunewise.tasks.speech_batches import ClipFeatures, EncodedClips, EncoderCache, SpeechCollator, encoder_frozen, transcribe, whisper_of
from tunewise.tasks.speech_config import SpeechConfig  # noqa: F401  (registers the speech: section)

PACKAGED_LABEL = "whisper-tiny.en (packaged)"
TRANSCRIPTS_FILE = "transcripts.json"
GENERAL_DOMAIN = "speech-clips"  # TaskSpec.general_domain: a (audio, transcript) set scored with the run's WER


@dataclass
class SpeechData:
    """Validated clips split into train and eval, their label token ids, and the processor."""

    train: list[Any]  # tunewise.data.audio.Clip
    eval: list[Any]
    train_labels: list[list[int]]
    processor: Any  # WhisperProcessor, prefix tokens set for the run's language and task
    source: str  # the model folder or hub id
    english_only: bool
    language: str | None
    report: dict[str, Any] = field(default_factory=dict)
    validation: list[Any] = field(default_factory=list)  # carved from train when the run early-stops

    def memory_settings(self, config: RunConfig, model: Any) -> dict[str, Any]:
        """The memory estimate's extra: the frozen encoder's outputs kept for every training and held-out clip."""
        from tunewise.tasks.speech_batches import encoder_frozen

        cached = config.speech.cache_encoder and not config.speech.augment().enabled and encoder_frozen(model)
        return {"cached_clips": len(self.train) + len(self.eval) + len(self.validation) if cached else 0}


# ---- the checkpoint: source, kind, language rules ---------------------------------------------


def speech_source(config: RunConfig) -> str:
    """The folder or hub id of the run's Whisper (the packaged tiny.en is converted once on first use)."""
    from tunewise.models.whisper import resolve_whisper

    return resolve_whisper(config.model)


def _is_packaged(name: str | None) -> bool:
    from tunewise.models.whisper import PACKAGED_ALIASES

    return name is None or not str(name).strip() or str(name).strip() in PACKAGED_ALIASES


def english_only_checkpoint(source: str | None, *, fetch: bool = False) -> bool | None:
    """Whether a Whisper checkpoint is English-only (``*.en``), read from its files without weights.

    The generation config's ``is_multilingual`` decides; without it, the vocabulary size does
    (English-only Whisper checkpoints have 51,864 tokens, multilingual ones 51,865 or more).

    Returns:
        True/False, or None when it cannot be told (a hub id without ``fetch``).
    """
    if _is_packaged(source):
        return True
    from tunewise.models.loading import model_config

    path = Path(str(source)).expanduser()
    generation = path / "generation_config.json"
    if generation.is_file():
        value = json.loads(generation.read_text(encoding="utf-8")).get("is_multilingual")
        if isinstance(value, bool):
            return not value
    config = model_config(str(source), fetch=fetch)
    if not config or "vocab_size" not in config:
        return None
    return int(config["vocab_size"]) < 51865


def check_language(english_only: bool | None, language: str | None, whisper_task: str, model: str) -> None:
    """Refuse settings the checkpoint cannot honour (one line naming the option).

    Raises:
        TunewiseError: another language or ``translate`` on an English-only checkpoint, or a
            multilingual checkpoint without ``speech.language``.
    """
    if english_only:
        if language not in (None, "en"):
            raise TunewiseError(f"speech.language: {model} is an English-only Whisper checkpoint and cannot transcribe "
                                f"'{language}'; use a multilingual checkpoint (e.g. openai/whisper-small) or leave speech.language empty")
        if whisper_task == "translate":
            raise TunewiseError(f"speech.task: {model} is an English-only Whisper checkpoint: it cannot translate; "
                                "use speech.task: transcribe, or a multilingual checkpoint")
    elif english_only is False and language is None:
        raise TunewiseError(f"speech.language: {model} is a multilingual Whisper checkpoint; set the language of your audio "
                            "(e.g. speech.language: sv) so that training and decoding use its token")


# ---- data ----------------------------------------------------------------------------------------


def read_clips(path: str, config: RunConfig, option: str) -> Any:
    """The (audio, transcript) set at ``path`` with the run's ``speech:`` reading options."""
    from tunewise.data.audio import read_speech_data

    sc = config.speech
    if not Path(path).expanduser().exists():
        raise TunewiseError(f"{option}: not found: {path}")
    return read_speech_data(Path(path), root=Path(sc.root) if sc.root else None, audio_column=sc.audio_column,
                            text_column=sc.text_column, on_bad_audio=sc.on_bad_audio, long_audio=sc.long_audio)


def split_clips(n: int, eval_size: int | None, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) index lists; eval gets ``eval_size`` or ``round(eval_fraction * n)`` (>= 1)."""
    if n < 2:
        raise TunewiseError(f"data.train: {n} usable clip; give at least 2 (one trains, one is held out), or speech.eval")
    k = eval_size if eval_size is not None else max(1, round(eval_fraction * n))
    if k >= n:
        raise TunewiseError(f"data.eval_size: {k} held-out clips leave none of the {n} to train on; lower it")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


def set_prefix(processor: Any, english_only: bool, language: str | None, whisper_task: str) -> None:
    """Label prefix: start of transcript [+ language + task for multilingual checkpoints] + no timestamps."""
    tok = processor.tokenizer
    tok.language, tok.task = (None, None) if english_only else (language, whisper_task)
    tok.predict_timestamps = False
    tok.set_prefix_tokens()


def encode_labels(processor: Any, clips: list[Any], limit: int, where: str) -> list[list[int]]:
    """Token ids of every transcript (prefix and end of text included), each within the decoder's positions.

    Raises:
        TunewiseError: a transcript longer than the decoder holds (naming file and row).
    """
    ids = processor.tokenizer([c.text for c in clips]).input_ids
    for clip, row in zip(clips, ids):
        if len(row) > limit:
            raise TunewiseError(f"{where}: row {clip.row}: the transcript of {clip.path.name} is {len(row)} tokens, more than "
                                f"Whisper's decoder holds ({limit}); split the clip and its transcript")
    return ids


def _hours(clips: list[Any]) -> float:
    return round(sum(c.seconds for c in clips) / 3600.0, 4)


# ---- evaluation ----------------------------------------------------------------------------------


@dataclass
class SpeechEvalResult:
    """WER/CER of one model state, the seconds it took, examples and per-clip scores (HasItems)."""

    metrics: dict[str, float]
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list, repr=False)
    items: dict[str, list[float]] = field(default_factory=dict, repr=False)
    clip_wer: list[float | None] = field(default_factory=list, repr=False)


def generation_kwargs(data: SpeechData, sc: SpeechConfig, max_target_positions: int) -> dict[str, Any]:
    """``generate()`` arguments: no language/task token for English-only checkpoints."""
    kwargs: dict[str, Any] = {"max_new_tokens": max(1, min(sc.max_new_tokens, max_target_positions - 4)), "num_beams": sc.num_beams}
    if not data.english_only:
        kwargs.update(language=data.language, task=sc.task)
    return kwargs


def score_transcripts(clips: list[Any], transcripts: list[str], language: str | None, spelling: dict | None, seconds: float,
                      show: int) -> SpeechEvalResult:
    """WER/CER with per-item scores and the first ``show`` examples (reference, transcript, clip WER)."""
    from tunewise.evaluate.wer import error_rates, normalizer

    rates = error_rates([c.text for c in clips], transcripts, normalizer(language, spelling))
    examples = [{"input": c.path.name, "expected": c.text, "output": t, "correct": cnt.word_errors == 0,
                 "wer": None if cnt.wer is None else round(cnt.wer, 4)}
                for c, t, cnt in list(zip(clips, transcripts, rates.counts))[:show]]
    return SpeechEvalResult(rates.metrics, seconds, examples, transcripts, rates.items, [c.wer for c in rates.counts])


def _spelling(processor: Any) -> dict | None:
    return getattr(processor.tokenizer, "english_spelling_normalizer", None)


# ---- the task ------------------------------------------------------------------------------------


@TASKS.register("speech-recognition", aliases=("asr",))
class SpeechRecognitionTask:
    """Fine-tune Whisper on (audio, transcript) pairs; score WER and CER before and after."""

    spec = TaskSpec(
        name="speech-recognition", summary="speech recognition: fine-tune Whisper on (audio, transcript) pairs (WER, CER)",
        unit="clips", primary="wer", aliases=("asr",),
        metrics=(Metric("wer", higher_is_better=False), Metric("cer", higher_is_better=False)),
        default_strategy="full",
        refused={"head": "Whisper's output is a token sequence from its decoder: no frozen backbone output can be cached "
                         "for a small head; use partial (frozen encoder), lora, qlora or full"},
        memory=MemoryProfile(step="speech", sequence="labels", arch_from="path"),
        default_model=PACKAGED_LABEL,
        lora_all_linear=True,  # q/k/v/out_proj and fc1/fc2 of both stacks (peft's Whisper default is q/v only)
        general_domain=GENERAL_DOMAIN,
        modality="audio",
    )

    def __init__(self) -> None:
        self._config: RunConfig | None = None
        self._data: SpeechData | None = None
        self._results: list[SpeechEvalResult] = []
        self._encoded = EncoderCache()  # evaluation clips' encoder outputs while the encoder is unchanged
        self._saved_adapter = False

    @staticmethod
    def model_source(config: RunConfig) -> str:
        """The folder or hub id the base model loads from (LoRA adapters record it)."""
        return speech_source(config)

    def check_config(self, config: RunConfig) -> None:
        """Checkpoint kind and language rules, from the checkpoint's files only (no weights, no conversion)."""
        self._config = config
        sc = config.speech
        if not _is_packaged(config.model):
            from tunewise.models.loading import check_modality

            check_modality(config.model, "audio", task=self.spec.name)
        name = config.model or PACKAGED_LABEL
        check_language(english_only_checkpoint(config.model), sc.language, sc.task, name)

    # ---- data
    def prepare_data(self, config: RunConfig) -> SpeechData:
        self.check_config(config)
        dc, sc = config.data, config.speech
        if not dc.train:
            raise TunewiseError("data.train: give a CSV/JSONL/Parquet of (audio, text) rows or a folder of audio files with transcripts")
        train_set = read_clips(dc.train, config, "data.train")
        skipped = list(train_set.skipped)
        if sc.eval:
            eval_set = read_clips(sc.eval, config, "speech.eval")
            train, held = list(train_set.clips), list(eval_set.clips)
            skipped += eval_set.skipped
        else:
            t_idx, e_idx = split_clips(len(train_set.clips), dc.eval_size, dc.eval_fraction, config.seed)
            train, held = [train_set.clips[i] for i in t_idx], [train_set.clips[i] for i in e_idx]
        if dc.max_train is not None and dc.max_train < len(train):
            keep = sorted(random.Random(config.seed).sample(range(len(train)), dc.max_train))
            train = [train[i] for i in keep]
        validation: list[Any] = []
        if config.train.early_stopping_patience is not None:  # validation WER on clips carved from training
            t_idx, v_idx = split_clips(len(train), None, dc.validation_fraction, config.seed + 1)
            train, validation = [train[i] for i in t_idx], [train[i] for i in v_idx]

        from tunewise.models.loading import load_whisper, model_config

        source = speech_source(config)
        _, processor = load_whisper(source, weights=False)
        english_only = english_only_checkpoint(source, fetch=True)
        if english_only is None:
            english_only = False
        check_language(english_only, sc.language, sc.task, config.model or PACKAGED_LABEL)
        set_prefix(processor, english_only, sc.language, sc.task)
        limit = int((model_config(source, fetch=True) or {}).get("max_target_positions", 448))
        labels = encode_labels(processor, train, limit, str(dc.train))
        encode_labels(processor, held, limit, str(sc.eval or dc.train))

        from tunewise.evaluate.wer import normalizer, normalizer_name

        norm = normalizer(sc.language, _spelling(processor))
        seen = {norm(c.text) for c in train}
        overlap = sum(norm(c.text) in seen for c in held)
        report = {
            "train_clips": len(train), "train_hours": _hours(train),
            "eval_clips": len(held), "eval_hours": _hours(held),
            "clips_skipped": len(skipped), "skipped_examples": [f"row {r}: {why}" for r, why in skipped[:3]],
            "eval_transcripts_in_train": overlap,
            "language": sc.language or ("en" if english_only else None), "whisper_task": sc.task,
            "english_only_checkpoint": english_only, "normalizer": normalizer_name(sc.language),
            "augmentation": {k: getattr(sc, k) for k in ("noise_snr_db", "speed", "pitch_semitones", "augment_p")}
            if sc.augment().enabled else None,
        }
        if overlap:
            from rich.console import Console

            Console(stderr=True).print(
                f"[yellow]leakage:[/] {overlap} of {len(held)} held-out transcripts also occur in training; the WER gain "
                "then partly measures memorised sentences: hold out other sentences (speech.eval)")
        if skipped:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]skipped:[/] {len(skipped)} clips (speech.on_bad_audio / long_audio: skip); "
                                       f"first: {report['skipped_examples'][0]}")
        if validation:
            report["validation_clips"] = len(validation)
        self._data = SpeechData(train, held, labels, processor, source, english_only, sc.language, report, validation)
        return self._data

    def data_report(self, data: SpeechData) -> dict[str, Any]:
        return data.report

    def n_train(self, data: SpeechData) -> int:
        return len(data.train)

    def subset(self, data: SpeechData, indices: list[int]) -> SpeechData:
        train = [data.train[i] for i in indices]
        report = {**data.report, "train_clips": len(train), "train_hours": _hours(train)}
        return dataclasses.replace(data, train=train, train_labels=[data.train_labels[i] for i in indices], report=report)

    # ---- model
    def load_model(self, config: RunConfig, device: str) -> Any:
        from tunewise.models.loading import load_whisper

        self._config = config
        source = self._data.source if self._data is not None else speech_source(config)
        model, _ = load_whisper(source)
        gc = model.generation_config
        gc.forced_decoder_ids = None  # language/task go through generate()'s arguments (deprecated field)
        return model.to(device)

    def modules(self, model: Any) -> Any:
        return model

    def _partial_encoder(self) -> bool:
        cfg = self._config
        return cfg is not None and cfg.strategy_name == "partial" and cfg.speech.partial_layers == "encoder"

    def backbone(self, model: Any) -> Any:
        """The whole model (LoRA, layer-wise schedules and ``partial`` over the decoder's layers: the
        encoder sits below the decoder's first block), or the encoder for ``partial`` with
        ``speech.partial_layers: encoder``."""
        return whisper_of(model).model.encoder if self._partial_encoder() else model

    def head_modules(self, model: Any) -> list:
        """Nothing new is added to Whisper; with the encoder as partial's backbone, the decoder trains above it."""
        return [whisper_of(model).model.decoder] if self._partial_encoder() else []

    # ---- evaluation and training
    def evaluate(self, model: Any, data: SpeechData, config: RunConfig, *, split: str = "eval") -> SpeechEvalResult:
        if split != "eval":
            raise TunewiseError(f"speech-recognition: no {split} set is prepared (only the held-out eval clips)")
        sc = config.speech
        start = time.perf_counter()
        limit = int(getattr(whisper_of(model).config, "max_target_positions", 448))
        # no evaluation autocast here: Whisper's feature extractor turns its (then bf16) STFT into numpy
        transcripts = transcribe(model, data.eval, data.processor, generation_kwargs(data, sc, limit), sc.eval_batch_size,
                                 cache=self._encoded if sc.cache_encoder else None)
        result = score_transcripts(data.eval, transcripts, sc.language, _spelling(data.processor), time.perf_counter() - start,
                                   config.eval.examples)
        self._results.append(result)
        return result

    def train(self, model: Any, data: SpeechData, config: RunConfig, *, workdir: Path, callbacks: list | None = None,
              param_groups: list[dict] | None = None, **extra_args: Any) -> TrainStats:
        """Train ``model`` in place with transformers' Seq2SeqTrainer (features computed per batch, augmented if asked).

        Args:
            callbacks: extra TrainerCallbacks (strategy schedules, budget time curve).
            param_groups: per-group learning rates from the strategy (AdamW over them).
            extra_args: more Seq2SeqTrainingArguments fields (e.g. ``max_steps``).
        """
        import logging

        import torch
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
        from transformers.trainer_callback import PrinterCallback

        from tunewise.data.audio import make_augmenter
        from tunewise.tasks.progress import quiet_progress
        from tunewise.tasks.training import (
            common_training_kwargs,
            early_stopping_callback,
            early_stopping_record,
            metric_key,
            train_resumable,
            validating,
            watched_metric,
        )

        tc, sc = config.train, config.speech
        device = str(next(model.parameters()).device)
        augment = sc.augment()
        begin = time.perf_counter()  # the frozen encoder's pass over the clips counts as training time
        if sc.cache_encoder and not augment.enabled and encoder_frozen(model):
            dataset: Any = EncodedClips(model, data.train, data.train_labels, data.processor, sc.eval_batch_size)
        else:
            dataset = ClipFeatures(data.train, data.train_labels, data.processor,
                                   make_augmenter(augment, config.seed) if augment.enabled else None)
        start_id = whisper_of(model).config.decoder_start_token_id
        optimizers: tuple[Any, Any] = (None, None)
        if param_groups:
            optimizers = (torch.optim.AdamW(param_groups, lr=tc.learning_rate, weight_decay=tc.weight_decay), None)
        metric, higher = watched_metric(config)  # early stopping: validation WER (or CER) of clips carved from training
        if metric is not None and not data.validation:
            raise TunewiseError("train.early_stopping_patience: no validation clips were prepared")
        kwargs: dict[str, Any] = {**common_training_kwargs(config, workdir, device, best_metric=metric_key(metric),
                                                           greater_is_better=higher),
                                  "remove_unused_columns": False, "predict_with_generate": False}
        kwargs.update(extra_args)
        args = Seq2SeqTrainingArguments(**kwargs)
        logging.getLogger("transformers.trainer").setLevel(logging.ERROR)
        trainer_cls: Any = Seq2SeqTrainer
        eval_dataset = None
        if metric is not None:
            limit = int(getattr(whisper_of(model).config, "max_target_positions", 448))

            def validate() -> dict[str, float]:
                said = transcribe(model, data.validation, data.processor, generation_kwargs(data, sc, limit), sc.eval_batch_size)
                return score_transcripts(data.validation, said, sc.language, _spelling(data.processor), 0.0, 0).metrics

            trainer_cls, eval_dataset = validating(Seq2SeqTrainer, validate), ["validation"]
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                              data_collator=SpeechCollator(start_id),
                              callbacks=[*(callbacks or []), *early_stopping_callback(config)], optimizers=optimizers)
        quiet_progress(trainer)
        trainer.remove_callback(PrinterCallback)
        output = train_resumable(trainer, config, workdir)  # continues an interrupted run's checkpoints (--resume)
        validations = [h for h in trainer.state.log_history if "eval_runtime" in h]
        seconds = max(time.perf_counter() - begin - sum(h["eval_runtime"] for h in validations), 1e-9)  # validation is not training
        epochs = float(output.metrics.get("epoch", tc.epochs))
        history = [{k: v for k, v in h.items() if k in ("epoch", "step", "loss")} for h in trainer.state.log_history if "loss" in h]
        stats = TrainStats(seconds=seconds, examples=len(dataset), steps=int(output.global_step), epochs=epochs,
                           samples_per_second=len(dataset) * epochs / seconds, history=[*history, *validations],
                           details={"train_hours": _hours(data.train), "encoder_outputs_cached": isinstance(dataset, EncodedClips)})
        if metric is not None:
            stats.best = early_stopping_record(trainer, config, metric)
        return stats

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict RUN AUDIO``: the saved model's transcripts of audio files (batched, one row each)."""
        from tunewise.data.audio import MAX_SECONDS, AudioError, Clip, audio_info
        from tunewise.models.loading import load_whisper
        from tunewise.predict import Predictor
        from tunewise.tasks.speech_batches import transcribe

        source = str(config.model)
        model, processor = load_whisper(source)
        model.generation_config.forced_decoder_ids = None
        model = model.to(device).eval()
        english_only = bool(english_only_checkpoint(source))
        sc = config.speech
        set_prefix(processor, english_only, sc.language, sc.task)
        limit = int(getattr(model.config, "max_target_positions", 448))
        gen: dict[str, Any] = {"max_new_tokens": max(1, min(sc.max_new_tokens, limit - 4)), "num_beams": sc.num_beams}
        if not english_only:
            gen.update(language=sc.language, task=sc.task)

        def apply(paths: list[Path], top_k: int) -> list[dict[str, Any]]:
            clips = []
            for row, path in enumerate(paths, 1):
                try:
                    seconds, _ = audio_info(Path(path))
                except AudioError as err:
                    raise TunewiseError(f"INPUT: {path}: {err}") from None
                if seconds > MAX_SECONDS:  # Whisper's window: the feature extractor would cut the rest silently
                    raise TunewiseError(f"INPUT: {path} is {seconds:.1f} s long; Whisper hears {MAX_SECONDS:g} s at a time: "
                                        "split it into clips of at most 30 s")
                clips.append(Clip(Path(path), "", seconds, row))
            said = transcribe(model, clips, processor, gen, sc.eval_batch_size, progress=False)
            return [{"transcript": t, "seconds": round(c.seconds, 3)} for c, t in zip(clips, said)]

        return Predictor(columns=("audio", "path", "file", "file_name"), modality="audio", apply=apply)

    def wiseft_sweep(self, config: RunConfig, data: SpeechData, model_dir: Path, options: Any, console: Any = None) -> dict[str, Any]:
        """WiSE-FT after a run (``strategy.interpolate``): WER of weight blends in-domain and on general speech
        (:func:`tunewise.tasks.speech_wiseft.speech_sweep`)."""
        from tunewise.tasks.speech_wiseft import speech_sweep

        return speech_sweep(self, config, data, model_dir, options, console)

    # ---- outputs
    def save(self, model: Any, path: Path) -> None:
        """The model (or a peft adapter) with its processor, so that ``pipeline("automatic-speech-recognition")``
        opens ``path``; ``transcripts.json`` holds every held-out clip's reference and transcripts."""
        from tunewise.outputs import write_json

        self._saved_adapter = hasattr(model, "peft_config")
        model.save_pretrained(str(path), safe_serialization=True)
        if self._data is not None:
            self._data.processor.save_pretrained(str(path))
            if len(self._results) >= 2 and len(self._results[0].transcripts) == len(self._data.eval):
                before, after = self._results[0], self._results[-1]
                rows = [{"audio": str(c.path), "row": c.row, "reference": c.text, "before": b, "after": a,
                         "wer_before": wb, "wer_after": wa}
                        for c, b, a, wb, wa in zip(self._data.eval, before.transcripts, after.transcripts, before.clip_wer, after.clip_wer)]
                write_json(Path(path) / TRANSCRIPTS_FILE, {"before": before.metrics, "after": after.metrics, "clips": rows})

    def card_info(self, data: SpeechData) -> dict[str, str]:
        """Model card fields: how to transcribe with the saved model, and what it was scored on."""
        if self._saved_adapter:
            usage = ("from peft import PeftModel\nfrom transformers import WhisperForConditionalGeneration, WhisperProcessor\n"
                     "processor = WhisperProcessor.from_pretrained(\"path/to/this/folder\")\n"
                     "base = WhisperForConditionalGeneration.from_pretrained(\"<base model in adapter_config.json>\")\n"
                     "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")")
            library = "peft"
        else:
            usage = ("from transformers import pipeline\n"
                     "asr = pipeline(\"automatic-speech-recognition\", model=\"path/to/this/folder\")\n"
                     "print(asr(\"clip.wav\")[\"text\"])")
            library = "transformers"
        evaluated_on = (f"{len(data.eval)} held-out clips ({data.report.get('eval_hours', 0):.3f} h); greedy transcripts scored "
                        f"by WER and CER after {data.report.get('normalizer')}; per-clip transcripts in {TRANSCRIPTS_FILE}")
        return {"library": library, "pipeline_tag": "automatic-speech-recognition", "usage": usage, "evaluated_on": evaluated_on}
