"""Tasks register on import: import this package to fill TASKS."""

from tunewise.tasks import embedding  # noqa: F401
from tunewise.tasks import classification  # noqa: F401
from tunewise.tasks import image_classification  # noqa: F401
from tunewise.tasks import image_search  # noqa: F401
from tunewise.tasks import clip  # noqa: F401
from tunewise.tasks import causal_lm  # noqa: F401
from tunewise.tasks.base import TASKS, Task, TrainStats

__all__ = ["TASKS", "Task", "TrainStats"]
