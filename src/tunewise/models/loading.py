"""Every load of a pre-trained model, tokenizer, processor, config or adapter goes through here.

What this module promises, in one place:

* **No code from a model folder runs.** Every loader gets ``trust_remote_code=False`` (so
  transformers never asks on stdin, and ``echo y |`` answers nothing), and a folder that needs
  its own code is refused before anything is read from it: ``auto_map`` in its config.json,
  tokenizer_config.json or preprocessor_config.json, a tokenizer/processor class transformers
  does not have, or a sentence-transformers module that is not one of the library's. There is
  no opt-in: run such a model with its own code outside tunewise.
* **Weights come from safetensors only.** A folder whose weights are pickles
  (``pytorch_model.bin``, ``*.pt``; unpickling can run code) is refused with the conversion to
  do; a folder with both loads the safetensors (``use_safetensors=True``).
* **A model of the wrong kind is named before any work**: a text encoder given to an image
  task, a vision backbone given to a text task (:func:`check_modality`).

Every refusal is one :class:`~tunewise.errors.TunewiseError` line naming the folder.

| function | loads |
|---|---|
| :func:`load_pretrained` | ``AutoConfig``, ``AutoTokenizer``, ``AutoProcessor``, ``AutoImageProcessor`` (no weights) |
| :func:`load_pretrained_model` | ``AutoModel*`` and model classes (weights) |
| :func:`load_sentence_transformer` | ``SentenceTransformer`` |
| :func:`load_adapter` | ``PeftModel.from_pretrained`` (a LoRA adapter folder) |
| :func:`load_whisper` | ``WhisperForConditionalGeneration`` and its ``WhisperProcessor`` |
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import pickle
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from tunewise.errors import TunewiseError
from tunewise.models.defaults import packaged_minilm_path

# Files whose ``auto_map`` (or class name) makes transformers import Python from the folder.
CODE_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
CLASS_KEYS = {"tokenizer_config.json": ("tokenizer_class",),
              "preprocessor_config.json": ("image_processor_type", "feature_extractor_type", "processor_class"),
              "processor_config.json": ("processor_class",)}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Pickles a Trainer checkpoint keeps beside its weights; from_pretrained never reads them.
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")
MODALITY_WORDS = {"text": "a text model", "image": "an image model", "image-text": "an image-text (CLIP-like) model",
                  "audio": "a speech model"}


def resolve_model(name: str | None) -> str:
    """A local folder for ``name`` (None = the packaged MiniLM), or the hub id unchanged.

    Raises:
        TunewiseError: the folder is missing, is not a model folder, or needs its own code.
    """
    if name is None or name == "":
        return str(packaged_minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TunewiseError(f"model: {name} is a file; give the model folder (with config.json)")
        markers = ("config.json", "modules.json", "tunewise_vision.json")  # HF, sentence-transformers, tunewise vision
        if not any((path / m).is_file() for m in markers):
            raise TunewiseError(f"model: {name} has no config.json or modules.json; is it a saved model folder?")
        refuse_custom_code(path)
        refuse_pickle_weights(path, name)  # before any data is read, not only when the weights load
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_local:
        raise TunewiseError(f"model: folder not found: {name}; check the path, or give a hub id such as sentence-transformers/all-MiniLM-L6-v2")
    return name  # a hub id: resolved by the loader (needs a network or a local HF cache)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: the loader that needs it says so


def _module_folders(path: Path) -> list[Path]:
    """``path`` and the module folders a sentence-transformers ``modules.json`` lists."""
    folders = [path]
    modules = _read_json(path / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        sub = path / str(module.get("path", "")) if isinstance(module, dict) else path
        if sub != path and sub.is_dir():
            folders.append(sub)
    return folders


def _custom_code(message: str, source: str | Path) -> TunewiseError:
    return TunewiseError(f"model: {source} needs custom code from the model folder ({message}); "
                         "tunewise does not run code from model folders")


@functools.cache
def _transformers_names() -> frozenset[str]:
    import transformers

    return frozenset(dir(transformers))  # the lazy module lists every class without importing it


def _is_transformers_class(name: str) -> bool:
    names = _transformers_names()
    candidates = {name, name.removesuffix("Fast"), name.replace("FeatureExtractor", "ImageProcessor")}
    return any(c in names for c in candidates)


def refuse_custom_code(path: Path, source: str | Path | None = None) -> None:
    """Raise when loading the folder ``path`` would import Python from it.

    Raises:
        TunewiseError: ``auto_map`` in a config file, a tokenizer/processor class transformers
            does not have, or a sentence-transformers module type outside the library.
    """
    source = source or path
    modules = _read_json(path / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind and not kind.startswith("sentence_transformers."):
            raise _custom_code(f"module type '{kind}' in modules.json is not a sentence-transformers class", source)
    for folder in _module_folders(path):
        where = "" if folder == path else f"{folder.name}/"
        for name in CODE_FILES:
            raw = _read_json(folder / name)
            if not isinstance(raw, dict):
                continue
            if raw.get("auto_map"):
                raise _custom_code(f"auto_map in {where}{name}", source)
            for key in CLASS_KEYS.get(name, ()):
                value = raw.get(key)
                if isinstance(value, str) and value and not _is_transformers_class(value):
                    raise _custom_code(f"{key} '{value}' in {where}{name} is not a transformers class", source)


def refuse_pickle_weights(path: Path, source: str | Path | None = None) -> None:
    """Raise when a folder's weights are pickles only (no ``.safetensors`` beside them).

    Raises:
        TunewiseError: naming the folder and how to convert it.
    """
    source = source or path
    for folder in _module_folders(path):
        files = [f for f in folder.iterdir() if f.is_file()]
        if any(f.name.endswith(".safetensors") for f in files):
            continue
        pickles = sorted(f.name for f in files if f.suffix in PICKLE_SUFFIXES and f.name not in NOT_WEIGHTS)
        if pickles:
            raise TunewiseError(
                f"model: {source} has pickle weights only ({', '.join(pickles)}); tunewise loads safetensors weights only, "
                "since unpickling can run code: convert them where you trust the file (load it, then "
                "save_pretrained(new_folder) writes .safetensors)")


def _local(source: str) -> Path | None:
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def _remote_code_error(err: ValueError, source: str) -> TunewiseError | None:
    """transformers' own refusal (a hub id we could not inspect first) as our one line."""
    text = str(err)
    if "trust_remote_code" in text or "custom code" in text:
        return _custom_code("auto_map in its files", source)
    return None


def load_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source, trust_remote_code=False, **kwargs)`` for configs,
    tokenizers and processors (no weights). transformers' other errors pass through: wrap the
    call in :func:`load_errors` for one line.

    Raises:
        TunewiseError: the folder (or hub repo) needs its own code.
    """
    path = _local(source)
    if path is not None:
        refuse_custom_code(path, source)
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except ValueError as err:
        refusal = _remote_code_error(err, source)
        if refusal is not None:
            raise refusal from None
        raise


def load_pretrained_model(loader: Any, source: str, **kwargs: Any) -> Any:
    """:func:`load_pretrained` for a model: a local folder must hold safetensors weights.

    Raises:
        TunewiseError: custom code, or pickle-only weights (a hub repo's: when torch refuses them).
    """
    path = _local(source)
    if path is not None and "gguf_file" not in kwargs:  # a GGUF file is not a pickle
        refuse_custom_code(path, source)  # first: the more serious refusal
        refuse_pickle_weights(path, source)
        kwargs.setdefault("use_safetensors", True)
    try:
        return load_pretrained(loader, source, **kwargs)
    except pickle.UnpicklingError:  # a hub repo's pickle that torch's weights_only loader refused
        raise TunewiseError(f"model: {source} has pickle weights that torch refused to unpickle; tunewise loads "
                            "safetensors weights only: use a model that has them") from None


def load_adapter(model: Any, folder: str | Path, **kwargs: Any) -> Any:
    """``PeftModel.from_pretrained(model, folder)``: a saved LoRA adapter on ``model``.

    Raises:
        TunewiseError: the adapter's weights are pickles only.
    """
    from peft import PeftModel

    path = Path(folder).expanduser()
    if path.is_dir():
        refuse_pickle_weights(path, folder)
    # peft has no remote-code path: adapter_config.json names a registered peft type, not a class to import
    return PeftModel.from_pretrained(model, str(folder), **kwargs)


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TunewiseError(f"train.device: '{device}' asked for, but no CUDA GPU is available; use auto or cpu")
    return device


@contextlib.contextmanager
def load_errors(source: str, kind: str = "") -> Iterator[None]:
    """Turn a loader's OSError/ValueError into one line naming ``source`` (``kind``: " as a ...")."""
    try:
        yield
    except OSError as err:
        if Path(source).exists():
            raise TunewiseError(f"model: cannot load {source} ({str(err).splitlines()[0]})") from None
        raise TunewiseError(
            f"model: '{source}' is not a local folder and could not be fetched from the Hugging Face Hub "
            "(no network?); download it where you have one, or give a local path"
        ) from None
    except ValueError as err:
        refusal = _remote_code_error(err, source)
        if refusal is not None:
            raise refusal from None
        raise TunewiseError(f"model: cannot load {source}{kind} ({str(err).splitlines()[0]})") from None


def load_sentence_transformer(name: str | None, device: str = "cpu", max_seq_length: int | None = None):
    """Load a sentence-transformers model (a plain HF encoder gets mean pooling).

    Args:
        name: local folder, hub id, or None for the packaged all-MiniLM-L6-v2.
        device: torch device string.
        max_seq_length: truncate inputs to this many tokens.

    Raises:
        TunewiseError: the folder is missing, not a text model, needs its own code or has pickle
            weights only, or the hub id cannot be fetched.
    """
    from sentence_transformers import SentenceTransformer

    source = resolve_model(name)
    check_modality(source, "text", fetch=False)
    path = _local(source)
    if path is not None:
        refuse_pickle_weights(path, source)
    # A plain HF encoder makes sentence-transformers warn that it adds mean pooling: expected.
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    with load_errors(source):
        model = SentenceTransformer(source, device=device, trust_remote_code=False)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


# -- what kind of model a folder holds ------------------------------------------------------------


def model_config(source: str, *, fetch: bool = False) -> dict[str, Any] | None:
    """The Hugging Face config of a local folder (a sentence-transformers folder's Transformer
    module included) as a dict; for a hub id with ``fetch``, ``AutoConfig`` fetches it.

    Returns:
        None when there is none to read (a tunewise-saved EfficientNet/timm folder, a hub id
        without ``fetch``).
    """
    path = _local(source)
    if path is None:
        if not fetch:
            return None
        from transformers import AutoConfig

        with load_errors(source, " as a model config"):
            return load_pretrained(AutoConfig, source).to_dict()
    for folder in _module_folders(path):
        raw = _read_json(folder / "config.json")
        if isinstance(raw, dict):
            return raw
    return None


def labels_in_order(id2label: Mapping[Any, Any]) -> list[str]:
    """``{"0": "a", "1": "b"}`` (JSON keys) or ``{0: "a"}`` -> ``["a", "b"]`` in output order."""
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def head_labels(config: Mapping[str, Any] | None, head: str) -> list[str] | None:
    """The label names of a saved classifier whose architecture ends in ``head``
    (``ForSequenceClassification``, ``ForImageClassification``); None for a bare backbone."""
    if not config or not any(str(a).endswith(head) for a in config.get("architectures") or ()):
        return None
    id2label = config.get("id2label") or {}
    return labels_in_order(id2label) if id2label else None


def model_modality(config: Mapping[str, Any]) -> str | None:
    """``text``, ``image`` or ``image-text`` for a Hugging Face config dict; None when unknown.

    transformers' own model-type tables decide; a type they do not list is judged by its fields
    (``vocab_size``: text; ``num_channels``: image).
    """
    from transformers.models.auto import modeling_auto as auto

    kind = config.get("model_type")
    if kind in auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES or kind in auto.MODEL_FOR_CTC_MAPPING_NAMES:
        return "audio"
    if ("text_config" in config and "vision_config" in config) or kind in auto.MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-text"
    if kind in auto.MODEL_FOR_IMAGE_MAPPING_NAMES or kind in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image"
    text_tables = (auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                   auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES)
    if any(kind in table for table in text_tables) or "vocab_size" in config:
        return "text"
    if "num_channels" in config or "image_size" in config:
        return "image"
    return None


def check_modality(source: str | None, needs: str, *, task: str = "", accepts: Iterable[str] = (),
                   fetch: bool = False) -> None:
    """Refuse a model of another kind than ``needs`` (``text``, ``image``, ``image-text``).

    Args:
        source: a resolved folder or hub id (None or a missing path: nothing to check).
        needs: what the task takes.
        task: the task's name, for the message.
        accepts: model types the task's loader builds whatever their kind (e.g. the types
            ``AutoModelForImageClassification`` knows: CLIP's vision tower classifies images).
        fetch: a hub id's config may be fetched (at load time; never while checking a config).

    Raises:
        TunewiseError: naming the model, its kind and the tasks it fits.
    """
    if not source:
        return
    path = _local(source)
    if path is not None:
        refuse_custom_code(path, source)  # the first thing to say about such a folder
    config = model_config(source, fetch=fetch)
    if config is None:
        return
    found = model_modality(config)
    kind = config.get("model_type", "unknown type")
    if found is None or found == needs or kind in set(accepts):
        return
    from tunewise.tasks import TASKS  # at call time: every task module is imported by then

    fits = [name for name in TASKS if TASKS.get(name).spec.modality == found]
    wanted = f"; task {task} needs {MODALITY_WORDS[needs]}" if task else f", not {MODALITY_WORDS[needs]}"
    plural = MODALITY_WORDS[found].split(" ", 1)[1].replace("model", "models")
    raise TunewiseError(f"model: {source} is {MODALITY_WORDS[found]} ({kind}){wanted}; "
                        f"{plural} fit task{'s' if len(fits) > 1 else ''} {', '.join(fits) or 'none'}")


def load_whisper(source: str, *, weights: bool = True) -> tuple[Any, Any]:
    """A Whisper checkpoint (local folder or hub id) as ``(WhisperForConditionalGeneration, WhisperProcessor)``, fp32.

    Args:
        source: a resolved folder or hub id (:func:`tunewise.models.whisper.resolve_whisper`).
        weights: False loads the processor only (the model is None).

    Raises:
        TunewiseError: custom code, pickle-only weights, a model of another kind (a text
            encoder, an image model), or a folder/hub id that cannot be loaded.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

    check_modality(source, "audio", task="speech-recognition", fetch=True)
    config = model_config(source, fetch=True)
    if config is not None and config.get("model_type") != "whisper":
        kind = config.get("model_type", "unknown type")
        hint = " (a speech model, but not Whisper)" if kind in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES else ""
        raise TunewiseError(f"model: {source} is a {kind} model{hint}; task speech-recognition fine-tunes Whisper checkpoints")
    with load_errors(source, " as a Whisper processor"):
        processor = load_pretrained(WhisperProcessor, source)
    if not weights:
        return None, processor
    with load_errors(source, " as a Whisper model"):
        model = load_pretrained_model(WhisperForConditionalGeneration, source, dtype=torch.float32)
    return model, processor
