"""Evaluation: pure metric functions (metrics.py), search (search.py), per-task evaluators.

``tunewise.evaluate`` is also the public API function (``tunewise.evaluate(config, model=...)``).
A package and a function cannot share one attribute of ``tunewise``, so this package is made
callable (module ``__class__`` assignment, supported since Python 3.5): calling it calls
:func:`tunewise.run.evaluate`, while ``tunewise.evaluate.metrics`` stays a module.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tunewise.run import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
