"""What a packaged demo declares, the registry that finds it, and the one function that runs it.

A demo is one :class:`Demo` entry registered with :func:`register_demo` in its family's module
(:mod:`~tunewise.demos.faq`, :mod:`~tunewise.demos.digits`, :mod:`~tunewise.demos.llm`). Its
data is written once into the tunewise cache and read back through the same readers as a
user's file, so a demo exercises exactly the ``tunewise fit`` path. ``tunewise demo --task
NAME [--budget]`` and ``tunewise demo-budget`` all call :func:`run_demo`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.errors import TunewiseError
from tunewise.registry import Registry

if TYPE_CHECKING:
    from rich.console import Console

    from tunewise.budget.results import BudgetResult
    from tunewise.config import RunConfig
    from tunewise.run import RunResult

LANGS = ("sv", "en")  # the packaged FAQ's languages: what --lang takes
DEFAULT_DEMO = "embedding"  # ``tunewise demo`` without --task: the FAQ search demo (faq.py)


@dataclass(frozen=True)
class Demo:
    """One packaged demo: what ``tunewise demo --task NAME`` runs.

    Args:
        name: what ``--task`` takes.
        task: the registered task it runs (``task`` in the config).
        data: builds the training file from packaged data, once, in the tunewise cache;
            called with the FAQ language (demos without text ignore it).
        values: the rest of the run config as dotted keys (``train.epochs``: ...).
        banner: printed before the run (rich markup); ``{name}``, ``{lang}`` and ``{strategy}``
            are filled in.
        model: the config's ``model`` (None: the task's default model).
        lang: the default FAQ language.
        data_values: config values computed from the data file (e.g. a split by count).
        output_dir: the default run folder (None: ``runs/demo-<name>``); ``--budget``
            appends ``-budget``.
        budget_values: values changed for ``--budget`` (e.g. shorter training per point).
        sweep: :func:`tunewise.budget.run_budget` arguments of ``--budget`` (grid, seeds,
            time-sweep epochs, validate); empty: its defaults (a geometric grid from about 25
            items to all, 3 seeds).
        budget_banner: printed before the sweep, like ``banner``.
    """

    name: str
    task: str
    data: Callable[[str], Path]
    values: Mapping[str, Any]
    banner: str = "[bold]tunewise demo --task {name}[/]"
    model: str | None = None
    lang: str = "sv"
    data_values: Callable[[Path], Mapping[str, Any]] | None = None
    output_dir: str | None = None
    budget_values: Mapping[str, Any] = field(default_factory=dict)
    sweep: Mapping[str, Any] = field(default_factory=dict)
    budget_banner: str = "[bold]tunewise budget demo[/]: task {name}"

    def folder(self, budget: bool = False) -> str:
        """The default output folder of the run (or of the ``--budget`` sweep)."""
        base = self.output_dir or f"runs/demo-{self.name}"
        return f"{base}-budget" if budget else base


DEMOS: Registry[Demo] = Registry("demo", "--task")


def register_demo(demo: Demo) -> Demo:
    """Add ``demo`` to :data:`DEMOS` under its name (a second demo of that name is a bug)."""
    return DEMOS.register(demo.name)(demo)


def cached_jsonl(name: str, rows: Callable[[], Iterable[dict]]) -> Path:
    """``<cache>/<name>``, written once as JSONL from ``rows()`` (atomically: no half file)."""
    from tunewise.files import cache_root, write_text

    path = cache_root() / name
    if not path.is_file():
        write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows()))
    return path


def _lang(demo: Demo, lang: str | None) -> str:
    if lang is None:
        return demo.lang
    if lang not in LANGS:
        raise TunewiseError(f"--lang: use {' or '.join(LANGS)}, got '{lang}'")
    return lang


def demo_config(output_dir: str | None = None, *, name: str = DEFAULT_DEMO, lang: str | None = None,
                overrides: list[str] | None = None, budget: bool = False) -> RunConfig:
    """The run config of the packaged demo ``name`` (the output folder is replaced if it exists).

    Args:
        output_dir: the run folder (default: the demo's, see :meth:`Demo.folder`).
        name: the demo (see :data:`DEMOS`; default the MiniLM FAQ search demo).
        lang: FAQ language, sv or en (default: the demo's).
        overrides: dotted ``key=value`` strings applied last (e.g. ``train.epochs=1``).
        budget: the config of the ``--budget`` sweep (its ``budget_values`` on top).

    Raises:
        TunewiseError: an unknown demo or language, or a bad override.
    """
    from tunewise.config import load_config

    demo = DEMOS.get(name)
    data = demo.data(_lang(demo, lang))
    values = {
        "task": demo.task,
        "model": demo.model,
        "output_dir": output_dir or demo.folder(budget),
        "overwrite": True,
        "data.train": str(data),
        **(demo.data_values(data) if demo.data_values is not None else {}),
        **demo.values,
        **(demo.budget_values if budget else {}),
    }
    return load_config(None, overrides, values=values)


def run_demo(name: str = DEFAULT_DEMO, *, budget: bool = False, output_dir: str | None = None,
             lang: str | None = None, overrides: list[str] | None = None, console: Console | None = None,
             sweep: Mapping[str, Any] | None = None) -> RunResult | BudgetResult:
    """Run the packaged demo ``name``: fine-tune and compare, or with ``budget`` its data and time sweep.

    Args:
        name: the demo (see :data:`DEMOS`).
        budget: run :func:`tunewise.budget.run_budget` on the demo instead of one fit.
        output_dir: the run (or budget) folder; default: the demo's.
        lang: FAQ language, sv or en (default: the demo's).
        overrides: dotted ``key=value`` strings on top of the demo's config.
        console: where the banner goes, and the run's messages (a quiet Console silences them).
        sweep: with ``budget``: run_budget arguments over the demo's ``sweep`` (``seeds``,
            ``backend``, ``price_per_hour``, ``fresh``, ``progress``, ``console``: the sweep's
            messages, default ``console``).

    Returns:
        The :class:`tunewise.run.RunResult`, or with ``budget`` the budget result.

    Raises:
        TunewiseError: an unknown demo or language, a bad override, ``sweep`` without ``budget``.
    """
    from rich.console import Console

    demo = DEMOS.get(name)
    if sweep and not budget:
        raise TunewiseError(f"run_demo: sweep options ({', '.join(sweep)}) need budget=True")
    console = console or Console()
    cfg = demo_config(output_dir, name=name, lang=lang, overrides=overrides, budget=budget)
    text = demo.budget_banner if budget else demo.banner
    console.print(text.format(name=name, lang=_lang(demo, lang), strategy=cfg.strategy_name))
    if budget:
        from tunewise.budget import run_budget

        return run_budget(cfg, output_dir=cfg.output_dir, **{"console": console, **demo.sweep, **(sweep or {})})
    from tunewise.run import fit

    return fit(cfg, console=console)
