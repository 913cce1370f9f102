"""Packaged demos: fine-tune a packaged model on packaged data, offline.

:data:`DEMOS` is keyed by the name ``tunewise demo --task`` takes; each family module
registers its demos on import (:mod:`~tunewise.demos.faq`: ``embedding`` and
``classification``; :mod:`~tunewise.demos.digits`: the image demos;
:mod:`~tunewise.demos.llm`). Every module of this package is imported, so adding a demo is one
:func:`register_demo` entry in its family's module, or a new family module; the CLI lists and
runs whatever is registered::

    from tunewise.demos import run_demo
    result = run_demo("classification", overrides=["train.epochs=1"])
"""

import importlib
import pkgutil

from tunewise.demos.base import DEFAULT_DEMO, DEMOS, LANGS, Demo, cached_jsonl, demo_config, register_demo, run_demo

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # each family registers its demos

__all__ = ["DEFAULT_DEMO", "DEMOS", "LANGS", "Demo", "cached_jsonl", "demo_config", "register_demo", "run_demo"]
