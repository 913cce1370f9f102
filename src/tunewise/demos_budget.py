"""The budget demo: a data and time sweep of the packaged MiniLM on the packaged FAQ.

Same data and split as ``tunewise demo`` (:func:`tunewise.demo.demo_config`: 400 training
pairs, the other questions held out against all answers), so "before" is the demo's
pre-trained score. The sweep: a geometric grid 25..400 (5 sizes) x 3 seeds at 2 epochs each,
and a 4-epoch time curve at 400 pairs: 16 training runs and about 20 evaluations of the
503-answer corpus. Its 15-minute target on a 2-core CPU is NOT yet measured: on a shared,
overloaded 2-core machine (load ~11) one 25-item point took ~80 s training + ~60 s evaluation.
"""

from __future__ import annotations

from typing import Any

from tunewise.config import RunConfig
from tunewise.demo import demo_config

DEMO_SWEEP: dict[str, Any] = {"seeds": 3, "epochs": 4.0, "validate": True}
DEMO_OVERRIDES = ["train.epochs=2"]


def budget_demo_config(output_dir: str = "runs/demo-budget", *, lang: str = "sv",
                       overrides: list[str] | None = None) -> RunConfig:
    """The demo's run config for a budget sweep (``output_dir`` is the budget folder)."""
    return demo_config(output_dir, lang=lang, overrides=[*DEMO_OVERRIDES, *(overrides or [])])


def run_budget_demo(output_dir: str = "runs/demo-budget", *, lang: str = "sv", overrides: list[str] | None = None,
                    **sweep: Any):
    """Run the demo sweep and write its report; ``sweep`` overrides :data:`DEMO_SWEEP`."""
    from tunewise.budget import run_budget

    cfg = budget_demo_config(output_dir, lang=lang, overrides=overrides)
    return run_budget(cfg, output_dir=output_dir, **{**DEMO_SWEEP, **sweep})
