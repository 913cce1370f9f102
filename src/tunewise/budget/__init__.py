"""The budget planner: what more labeled data and training time would buy.

``run_budget`` runs a data sweep (nested, seeded subsets on a grid) and a time sweep (one run
evaluated every epoch), writes every finished point to a resumable store, and reports ROI,
knees (with their stability over resampled seeds), a plain-language recommendation and a
learning-curve forecast::

    from tunewise.budget import run_budget
    result = run_budget("run.yaml", seeds=3, price_per_hour=2.5, target=0.6, validate=True)
    print(result.recommendation.text, result.report_path)

The pure parts (ROI, knee, forecast, grids, store) import without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunewise.budget.advice import Recommendation, recommend
from tunewise.budget.forecast import ForecastResult, TargetEstimate, ValidationResult, forecast, labels_for_target, validate_forecast
from tunewise.budget.grid import check_grid, default_grid, nested_subsets, parse_sizes
from tunewise.budget.roi import BudgetPoint, SizeSummary, find_knee, marginal_roi, relative_improvement, summarize_points
from tunewise.budget.stability import KneeStability, knee_stability
from tunewise.budget.store import ResultStore, config_fingerprint

if TYPE_CHECKING:
    from tunewise.budget.results import BudgetResult
    from tunewise.budget.sweep import run_budget

__all__ = [
    "run_budget", "BudgetResult", "BudgetPoint", "SizeSummary", "Recommendation", "ResultStore",
    "config_fingerprint", "summarize_points", "relative_improvement", "marginal_roi", "find_knee", "recommend",
    "forecast", "labels_for_target", "validate_forecast", "ForecastResult", "TargetEstimate", "ValidationResult",
    "default_grid", "check_grid", "nested_subsets", "parse_sizes", "knee_stability", "KneeStability",
]


def __getattr__(name: str) -> Any:
    # Lazy: the sweep imports the task registry (torch, transformers).
    if name == "run_budget":
        from tunewise.budget.sweep import run_budget

        return run_budget
    if name == "BudgetResult":
        from tunewise.budget.results import BudgetResult

        return BudgetResult
    raise AttributeError(f"module 'tunewise.budget' has no attribute {name!r}")
