"""Load encoders by local path or hub id, safely (no remote code) and with clear errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from tunewise.errors import TunewiseError
from tunewise.models.defaults import packaged_minilm_path


def resolve_model(name: str | None) -> str:
    """A local folder for ``name`` (None = the packaged MiniLM), or the hub id unchanged."""
    if name is None or name == "":
        return str(packaged_minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TunewiseError(f"model: {name} is a file; give the model folder (with config.json)")
        markers = ("config.json", "modules.json", "tunewise_vision.json")  # HF, sentence-transformers, tunewise vision
        if not any((path / m).is_file() for m in markers):
            raise TunewiseError(f"model: {name} has no config.json or modules.json; is it a saved model folder?")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_local:
        raise TunewiseError(f"model: folder not found: {name}; check the path, or give a hub id such as sentence-transformers/all-MiniLM-L6-v2")
    return name  # a hub id: resolved by the loader (needs a network or a local HF cache)


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
        raise TunewiseError(f"model: cannot load {source}{kind} ({str(err).splitlines()[0]})") from None


def load_sentence_transformer(name: str | None, device: str = "cpu", max_seq_length: int | None = None):
    """Load a sentence-transformers model (a plain HF encoder gets mean pooling).

    Args:
        name: local folder, hub id, or None for the packaged all-MiniLM-L6-v2.
        device: torch device string.
        max_seq_length: truncate inputs to this many tokens.

    Raises:
        TunewiseError: the folder is missing or not a model, or the hub id cannot be fetched.
    """
    from sentence_transformers import SentenceTransformer

    source = resolve_model(name)
    # A plain HF encoder makes sentence-transformers warn that it adds mean pooling: expected.
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    with load_errors(source):
        model = SentenceTransformer(source, device=device, trust_remote_code=False)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model
