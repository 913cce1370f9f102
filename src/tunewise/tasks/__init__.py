"""Tasks register on import: importing this package imports every module in it, filling TASKS.

A new task is a new module in this package (``@TASKS.register("name")`` on its class); nothing
here changes. Only modules of this package are imported (never names from a config).
"""

import importlib
import pkgutil

from tunewise.tasks.base import TASKS, Task, TrainStats

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["TASKS", "Task", "TrainStats"]
