"""A text generator for data levers (synthetic queries, paraphrases): load, generate in batches, cache.

The generator is a causal LM (decoder only: prompts padded on the left, the model's chat
template when it has one) or a seq2seq model (doc2query-style T5), read by path or hub id
without custom code. Outputs are cached on disk per (input text, generator fingerprint,
template, settings) under ``<cache>/generated/<key>/``, with the seconds each input cost, so
a budget sweep generates once and can still report what generation cost in full.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

CACHE_FORMAT = "1"


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation depends on (besides the inputs): part of the cache key."""

    template: str  # filled with {document} (the input) and {language}
    language: str
    per_input: int = 1
    max_new_tokens: int = 32
    temperature: float = 0.7
    seed: int = 42
    batch_size: int = 16


@dataclass
class Generated:
    """Outputs per input (``per_input`` strings each), the full cost and what this call paid."""

    outputs: list[list[str]]
    seconds: float  # generation seconds of every input, cached ones at what they cost when made
    paid_seconds: float  # what this call spent generating (0 when the cache answered)
    cached: int  # inputs answered from the cache
    generator: str


def resolve_generator(name: str) -> str:
    """The generator's folder or hub id: ``name``, or the packaged SmolLM2-135M-Instruct when empty."""
    if name:
        return name
    from tunewise.models.smollm import packaged_smollm2_path

    return str(packaged_smollm2_path())


@functools.cache
def _mapping_names() -> tuple[set[str], set[str], set[str], set[str]]:
    from transformers.models.auto import modeling_auto as auto

    def flat(mapping: dict[str, Any]) -> set[str]:
        out: set[str] = set()
        for value in mapping.values():
            out.update([value] if isinstance(value, str) else value)
        return out

    causal, seq2seq = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    return set(causal), flat(causal), set(seq2seq), flat(seq2seq)


def generator_kind(name: str) -> tuple[str, str]:
    """``(path or hub id, "causal" | "seq2seq")`` from the generator's config alone (no weights loaded).

    Raises:
        TunewiseError: the config cannot be read, needs custom code, or is not a causal LM or a
            seq2seq model (e.g. an encoder such as BERT or a sentence-transformers folder).
    """
    from transformers import AutoConfig

    from tunewise.models.loading import load_errors, load_pretrained

    source = resolve_generator(name)
    with load_errors(source, " as a generator config"):
        config = load_pretrained(AutoConfig, source)
    causal_types, causal_archs, s2s_types, s2s_archs = _mapping_names()
    archs = set(getattr(config, "architectures", None) or [])
    if archs:
        if archs & s2s_archs:
            return source, "seq2seq"
        if archs & causal_archs:
            return source, "causal"
    elif config.model_type in s2s_types:
        return source, "seq2seq"
    elif config.model_type in causal_types and getattr(config, "is_decoder", True) is not False:
        return source, "causal"
    shown = ", ".join(sorted(archs)) or config.model_type
    raise TunewiseError(f"synthetic.generator: {source} is a {shown}, not a text generator; give a causal LM "
                        "(e.g. an instruct model) or a seq2seq query generator (doc2query T5), or leave it empty for "
                        "the packaged SmolLM2-135M-Instruct")


def generator_fingerprint(source: str) -> str:
    """A key for the generator's weights and tokenizer: a hash of a local folder's files, or the hub id.

    Hashing a 500 MB folder takes a while on a busy machine: the hash is remembered in-process per
    (file name, size, modification time) of every file.
    """
    path = Path(source)
    if not path.is_dir():
        return f"hub:{source}"
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir())
                  if p.is_file() and not p.name.startswith("."))
    return _folder_hash(str(path), stamp)


_SAMPLE = 1 << 22  # bytes read at the start, middle and end of a large file


@functools.lru_cache(maxsize=8)
def _folder_hash(folder: str, stamp: tuple) -> str:
    """Small files (configs, tokenizer) whole; a large weights file by its size and three 4 MiB samples
    (a safetensors header, which names every tensor and its offsets, sits in the first)."""
    try:
        import xxhash

        h = xxhash.xxh3_128()
    except ImportError:  # pragma: no cover - datasets depends on xxhash
        h = hashlib.blake2b(digest_size=16)
    for name, size, _ in stamp:
        h.update(f"{name}|{size}".encode() + b"\x00")
        with (Path(folder) / name).open("rb") as fh:
            if size <= 4 * _SAMPLE:
                h.update(fh.read())
                continue
            for offset in (0, size // 2, size - _SAMPLE):
                fh.seek(offset)
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()


def cache_folder(key: str) -> Path:
    from tunewise.files import cache_root

    return cache_root() / "generated" / key


def _input_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_cache(folder: Path) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for part in sorted(folder.glob("part-*.json")):
        with contextlib.suppress(OSError, ValueError):  # a damaged part is regenerated, never trusted
            data = json.loads(part.read_text(encoding="utf-8"))
            if data.get("format") == CACHE_FORMAT:
                entries.update(data.get("entries", {}))
    return entries


def generate(inputs: list[str], generator: str, settings: GenerationSettings, *, description: str = "generating") -> Generated:
    """``settings.per_input`` generations for each input, from the cache where they were made before.

    Args:
        inputs: texts filled into ``settings.template`` as ``{document}``.
        generator: folder or hub id; empty = the packaged SmolLM2-135M-Instruct.
        description: the progress bar's label.

    Returns:
        The outputs (raw decoded text, stripped) in input order and the generation cost.
    """
    from tunewise.files import write_json
    from tunewise.models.feature_cache import fingerprint

    source, kind = generator_kind(generator)
    precision = str(_dtype(_device()))  # bf16 and fp32 sample different tokens: part of the key
    key = fingerprint(generator=generator_fingerprint(source), kind=kind, dtype=precision, **vars(settings) | {"batch_size": None})
    folder = cache_folder(key)
    cache = _load_cache(folder)
    hashes = [_input_hash(text) for text in inputs]
    missing = list(dict.fromkeys(h for h in hashes if h not in cache))
    paid = 0.0
    if missing:
        first = {h: text for h, text in zip(hashes, inputs)}

        def save(done: list[tuple[list[str], float]], start: int) -> None:  # every batch: an interrupted run keeps its work
            fresh = {h: {"outputs": outs, "seconds": seconds} for h, (outs, seconds) in zip(missing[start:], done)}
            write_json(folder / f"part-{uuid.uuid4().hex}.json", {"format": CACHE_FORMAT, "generator": source, "entries": fresh})
            cache.update(fresh)

        paid = _run(source, kind, [first[h] for h in missing], settings, description, save)
    unique = dict.fromkeys(hashes)
    return Generated(outputs=[list(cache[h]["outputs"]) for h in hashes],
                     seconds=float(sum(cache[h]["seconds"] for h in unique)), paid_seconds=paid,
                     cached=len(unique) - len(missing), generator=source)


def _run(source: str, kind: str, texts: list[str], settings: GenerationSettings, description: str, save: Any) -> float:
    """Generate for ``texts`` in batches, calling ``save(results, start)`` after each; returns the seconds spent.

    Each input is charged its share of its batch's seconds.
    """
    import torch

    from tunewise.tasks.progress import hidden_bars, work_progress

    with hidden_bars("transformers"):
        model, tokenizer = _load(source, kind)
    spent = 0.0
    with work_progress(description, len(texts)) as advance, torch.inference_mode():
        for start in range(0, len(texts), settings.batch_size):
            batch = texts[start:start + settings.batch_size]
            began = time.perf_counter()
            outputs = _generate_batch(model, tokenizer, kind, batch, settings, seed=settings.seed + start)
            seconds = time.perf_counter() - began
            spent += seconds
            n = settings.per_input
            save([(outputs[i * n:(i + 1) * n], seconds / len(batch)) for i in range(len(batch))], start)
            advance(len(batch))
    del model
    return spent


def _load(source: str, kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from tunewise.models.loading import load_errors, load_pretrained, load_pretrained_model

    loader = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    device = _device()
    with load_errors(source, " as a generator"):
        tokenizer = load_pretrained(AutoTokenizer, source)
        model = load_pretrained_model(loader, source, dtype=_dtype(device))
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt of every row
    return model, tokenizer


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(device: str):
    """bf16 where the hardware computes it natively (about 4x the fp32 matmul rate on AVX512-BF16 CPUs), else fp32."""
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    cpu_bf16 = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() == "AVX512" and torch.cpu._is_avx512_bf16_supported()
    return torch.bfloat16 if cpu_bf16 else torch.float32


def prompt_texts(tokenizer: Any, kind: str, batch: list[str], settings: GenerationSettings) -> list[str]:
    """The prompts of a batch: the template filled in, in the model's chat template when it has one."""
    filled = [settings.template.replace("{language}", settings.language).replace("{document}", text) for text in batch]
    if kind == "causal" and getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                for p in filled]
    return filled


def _generate_batch(model: Any, tokenizer: Any, kind: str, batch: list[str], settings: GenerationSettings, *, seed: int) -> list[str]:
    import torch

    prompts = prompt_texts(tokenizer, kind, batch, settings)
    templated = kind == "causal" and getattr(tokenizer, "chat_template", None)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=1024,
                    add_special_tokens=not templated).to(model.device)
    sample = settings.temperature > 0
    options: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, do_sample=sample,
                                   num_return_sequences=settings.per_input, pad_token_id=tokenizer.pad_token_id)
    if sample:
        options.update(temperature=float(settings.temperature), top_p=1.0, top_k=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same batch samples the same queries on every run
        out = model.generate(**enc, **options)
    if kind == "causal":
        out = out[:, enc["input_ids"].shape[1]:]  # (batch * per_input, new tokens)
    return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
