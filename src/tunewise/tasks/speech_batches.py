"""Batches of the speech task: log-mel features per clip, encoder outputs reused while the encoder is frozen,
and batched transcription.

Whisper pads every clip to its 30 s window, so the encoder's forward pass (1,500 positions per
clip) is most of a step's compute whatever the clip's length. While the encoder does not train
(``partial`` with the encoder frozen) its outputs do not change, so they are computed once per
clip and reused: across training epochs (:class:`EncodedClips`, when there is no augmentation,
which changes the audio every epoch, and no dropout in the encoder) and between the "before"
and "after" evaluations (:class:`EncoderCache`, keyed by a fingerprint of the encoder's
parameters, so a trained encoder is never served stale outputs). Both hold fp32 tensors of
``positions x d_model`` per clip and are used only below :data:`CACHE_LIMIT_BYTES`.

Decoding runs on one CPU thread: its steps are small matrix products on a few rows, where
OpenMP synchronisation between threads costs more than it saves (measured on the demo, 2 busy
cores: 4.1 s with one thread vs 24.0 s with two for the same 2 clips and 24 tokens).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CACHE_LIMIT_BYTES = 2 * 2**30  # encoder outputs kept per cache (tiny.en: 2.3 MB per clip, about 900 clips)


def whisper_of(model: Any) -> Any:
    """The WhisperForConditionalGeneration inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def features(processor: Any, clips: list[Any], augment: Any = None) -> Any:
    """Log-mel features ``(clips, mels, 3000)`` of ``clips`` (float32 tensor)."""
    from tunewise.data.audio import SAMPLE_RATE, load_audio

    audio = [load_audio(c.path) for c in clips]
    if augment is not None:
        audio = [augment(a) for a in audio]
    return processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


def encoder_frozen(model: Any) -> bool:
    """No encoder parameter trains and the encoder has no dropout: its outputs are fixed."""
    whisper = whisper_of(model)
    cfg = whisper.config
    no_dropout = not any(float(getattr(cfg, k, 0.0) or 0.0) for k in ("dropout", "attention_dropout", "activation_dropout"))
    return no_dropout and not any(p.requires_grad for p in whisper.model.encoder.parameters())


def fingerprint(model: Any) -> tuple[float, float]:
    """A cheap checksum of the encoder's parameters (changes when any of them trains)."""
    import torch

    with torch.no_grad():
        params = list(whisper_of(model).model.encoder.parameters())
        weighted = sum(float(p.double().sum()) * (i + 1) for i, p in enumerate(params))
        return weighted, sum(float(p.double().abs().sum()) for p in params)


def cache_fits(model: Any, n_clips: int) -> bool:
    cfg = whisper_of(model).config
    return n_clips * cfg.max_source_positions * cfg.d_model * 4 <= CACHE_LIMIT_BYTES


@contextlib.contextmanager
def cpu_threads(n: int, device: Any) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads on CPU (nothing changes on a GPU)."""
    import torch

    if str(device).startswith("cuda"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EncoderCache:
    """Encoder outputs of the evaluation clips, reused while the encoder's fingerprint is the same."""

    def __init__(self) -> None:
        self.key: tuple[float, float] | None = None
        self.outputs: dict[Any, Any] = {}

    def lookup(self, model: Any) -> dict[Any, Any]:
        """The outputs stored for this encoder state (emptied when the encoder changed)."""
        key = fingerprint(model)
        if key != self.key:
            self.key, self.outputs = key, {}
        return self.outputs


def transcribe(model: Any, clips: list[Any], processor: Any, gen: dict[str, Any], batch_size: int, *, progress: bool = True,
               desc: str = "transcribing", cache: EncoderCache | None = None) -> list[str]:
    """Transcripts of ``clips``: the encoder on each batch (or its cached outputs), then ``generate()`` on one CPU thread.

    Args:
        gen: ``generate()`` arguments (:func:`tunewise.tasks.speech.generation_kwargs`).
        cache: reuse encoder outputs across calls while the encoder is unchanged (None: no reuse).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers.modeling_outputs import BaseModelOutput

    device = next(model.parameters()).device
    whisper = whisper_of(model)
    stored = cache.lookup(model) if cache is not None and cache_fits(model, len(clips)) else None
    was = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in tqdm(range(0, len(clips), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
            batch = clips[start:start + batch_size]
            with torch.inference_mode():
                if stored is not None and all(c.path in stored for c in batch):
                    hidden = torch.stack([stored[c.path] for c in batch]).to(device)
                else:
                    hidden = whisper.model.encoder(features(processor, batch).to(device)).last_hidden_state  # (batch, positions, d)
                    if stored is not None:
                        stored.update({c.path: h.detach().cpu() for c, h in zip(batch, hidden)})
                with cpu_threads(1, device):
                    ids = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **gen)
            out.extend(t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True))
    finally:
        model.train(was)
    return out


class ClipFeatures:
    """A torch-style dataset: log-mel features of each clip (augmented when ``augment`` is given) and its labels."""

    def __init__(self, clips: list[Any], labels: list[list[int]], processor: Any, augment: Any = None) -> None:
        self.clips, self.labels, self.processor, self.augment = clips, labels, processor, augment

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_features": features(self.processor, [self.clips[i]], self.augment)[0], "labels": self.labels[i]}  # (mels, 3000)


class EncodedClips:
    """A torch-style dataset of precomputed encoder outputs (a frozen encoder) and labels."""

    def __init__(self, model: Any, clips: list[Any], labels: list[list[int]], processor: Any, batch_size: int) -> None:
        import torch
        from tqdm.auto import tqdm

        whisper = whisper_of(model)
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        self.hidden: list[Any] = []
        try:
            for start in tqdm(range(0, len(clips), batch_size), desc="encoding clips (frozen encoder)", unit="batch", leave=False):
                with torch.inference_mode():
                    out = whisper.model.encoder(features(processor, clips[start:start + batch_size]).to(device)).last_hidden_state
                self.hidden.extend(h.detach().cpu().clone() for h in out)
        finally:
            model.train(was)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"encoder_hidden": self.hidden[i], "labels": self.labels[i]}


@dataclass
class SpeechCollator:
    """Stacks features (or cached encoder outputs), pads labels with -100 and drops a leading
    start-of-transcript token (the model prepends ``decoder_start_token_id`` when it shifts labels right)."""

    decoder_start_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.long)
        if bool((labels[:, 0] == self.decoder_start_token_id).all()):
            labels = labels[:, 1:]
        if "encoder_hidden" in rows[0]:
            return {"encoder_outputs": (torch.stack([r["encoder_hidden"] for r in rows]),), "labels": labels}  # (batch, positions, d)
        feats = torch.stack([torch.as_tensor(r["input_features"], dtype=torch.float32) for r in rows])  # (batch, mels, frames)
        return {"input_features": feats, "labels": labels}
