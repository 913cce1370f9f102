"""tunewise: fine-tune pre-trained models on a small budget, and measure what it buys.

The public API is small; the command line calls exactly these functions::

    import tunewise
    result = tunewise.fit("run.yaml")                    # or a dict / RunConfig
    print(result.before["mrr@20"], result.after["mrr@20"])
    tunewise.evaluate("run.yaml", model="runs/faq")
    tunewise.predict("runs/faq", ["new query"])          # use the fine-tuned model
    tunewise.run_budget("run.yaml", seeds=3)             # data/time sweeps, ROI, knee, forecast
    tunewise.estimate_memory("path/or/hub-id", strategy="lora", batch_size=16)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["fit", "evaluate", "predict", "run_budget", "estimate_memory", "load_config", "RunConfig", "TunewiseError", "__version__"]

import logging

from tunewise.errors import TunewiseError

# bitsandbytes' CPU backend logs a hub-kernel hint when it is imported (peft imports it when
# installed): noise before every command's output, and before the one-line error of bad input.
# Set once here, before any tunewise module can import peft.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

if TYPE_CHECKING:
    from tunewise.budget import run_budget
    from tunewise.config import RunConfig, load_config
    from tunewise.memory import estimate_memory
    from tunewise.run import evaluate, fit


def __getattr__(name: str) -> Any:
    # Lazy: `import tunewise` stays cheap; torch loads on first use.
    if name == "fit":
        from tunewise.run import fit

        return fit
    if name == "evaluate":  # the package tunewise.evaluate is callable: it runs run.evaluate
        import tunewise.evaluate

        return tunewise.evaluate
    if name == "predict":  # the module tunewise.predict is callable: it runs predict.predict
        import tunewise.predict

        return tunewise.predict
    if name == "run_budget":
        from tunewise.budget import run_budget

        return run_budget
    if name == "estimate_memory":
        from tunewise.memory import estimate_memory

        return estimate_memory
    if name in ("load_config", "RunConfig"):
        from tunewise import config

        return getattr(config, name)
    raise AttributeError(f"module 'tunewise' has no attribute {name!r}")
