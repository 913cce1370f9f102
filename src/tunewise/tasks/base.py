"""The contract every task fulfils, and the registry that finds tasks by name.

A task knows its data, how to load its model, how to train it (on the HF Trainer family)
and how to evaluate and save it. The runner (:mod:`tunewise.run`) only talks to this
protocol, so a new task (image embeddings, classification, causal LM) is a new module
registered under a new name; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunewise.config import RunConfig
from tunewise.registry import Registry


@dataclass
class TrainStats:
    """What training measured."""

    seconds: float
    examples: int
    steps: int
    epochs: float
    samples_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)  # evaluations during training
    best: dict[str, Any] | None = None  # early stopping: the restored checkpoint


class Task(Protocol):
    name: str
    primary_metric: str  # default primary metric
    unit: str  # what one training example is called in reports ("pairs", "items")

    def prepare_data(self, config: RunConfig) -> Any:
        """Read and split the data; raise TunewiseError on bad input."""

    def data_report(self, data: Any) -> dict[str, Any]:
        """Counts, leakage and other facts about the prepared data."""

    def subset(self, data: Any, indices: list[int]) -> Any:
        """The same data with only the training examples at ``indices`` (budget planner)."""

    def n_train(self, data: Any) -> int:
        """Number of training examples."""

    def load_model(self, config: RunConfig, device: str) -> Any:
        """Load the pre-trained model."""

    def evaluate(self, model: Any, data: Any, config: RunConfig, *, split: str = "eval") -> Any:
        """Score a model state; returns an EvalResult-like object with ``metrics``."""

    def train(self, model: Any, data: Any, config: RunConfig, *, workdir: Path, callbacks: list | None = None) -> TrainStats:
        """Train in place with the HF Trainer family."""

    def save(self, model: Any, path: Path) -> None:
        """Save so the ecosystem's own loader opens ``path``."""

    def modules(self, model: Any) -> Any:
        """The torch module whose parameters the strategies freeze/adapt."""

    def card_info(self, data: Any) -> dict[str, str]:
        """Model card fields: library, pipeline_tag, usage (code), evaluated_on (a phrase)."""

    # Optional: ``baseline(model, data, config) -> EvalResult`` scores the pre-trained model
    # when it cannot be evaluated as is (classification: a head fitted on frozen features).


TASKS: Registry[type] = Registry("task", "task")
