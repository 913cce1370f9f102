"""Packaged demos: fine-tune a packaged model on packaged data, offline.

:data:`DEMOS` is keyed by the name ``tunewise demo --task`` takes; each family module
registers its demos on import (:mod:`~tunewise.demos.faq`: ``embedding`` and
``classification``; :mod:`~tunewise.demos.digits`: the image demos;
:mod:`~tunewise.demos.llm`). Adding a demo is one :func:`register_demo` entry in its family's
module (a new family: one import line below); the CLI lists and runs whatever is registered::

    from tunewise.demos import run_demo
    result = run_demo("classification", overrides=["train.epochs=1"])
"""

from tunewise.demos import digits, faq, llm  # noqa: F401 - each registers its demos
from tunewise.demos.base import DEFAULT_DEMO, DEMOS, LANGS, Demo, cached_jsonl, demo_config, register_demo, run_demo

__all__ = ["DEFAULT_DEMO", "DEMOS", "LANGS", "Demo", "cached_jsonl", "demo_config", "register_demo", "run_demo"]
