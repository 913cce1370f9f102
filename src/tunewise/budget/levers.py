"""The budget planner prices the levers: what mined negatives, synthetic queries or augmentation buy.

A data sweep answers "what do more labels buy?". The levers of issue 16 get more from the same
labels; ``tunewise budget run.yaml --levers none,hard-negatives,synthetic:800`` measures each
lever at each labeled size of the grid (nested seeds, the same evaluation set) and prices it
against the plain sweep (:mod:`tunewise.budget.lever_report`)::

    from tunewise.budget.levers import run_levers
    result = run_levers("run.yaml", levers="none,synthetic:800", sizes=[50, 100, 200], seeds=2)
    print(*result.words, sep="\\n")

Levers sit in a registry keyed by the names users type (:data:`LEVERS`): each entry turns the
name and its optional ``:N`` into dotted config overrides, says which tasks accept it, and names
the key its cost is reported under in ``TrainStats.details["levers"]``
(:mod:`tunewise.data.training_rows`). A new lever is one :func:`register_lever` call.
Combinations join names with ``+`` (``hard-negatives+synthetic:800``).

Each lever is one :func:`tunewise.budget.run_budget` call with that lever's overrides: the same
config seed gives the same split, the same nested subsets and the same evaluation set. ``none``
is the plain sweep in the budget folder itself (an earlier ``tunewise budget`` is reused); every
other lever has its own result store under ``levers/<name>/``, so an interrupted multi-lever
sweep resumes lever by lever.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.registry import Registry

OPTION = "--levers"


@dataclass(frozen=True)
class Lever:
    """One lever as the planner sees it.

    Args:
        name: what users type (``synthetic``).
        summary: one line for help and reports.
        overrides: the optional number after ``:`` -> dotted config overrides.
        accepts: whether a task (its :class:`~tunewise.tasks.base.TaskSpec`) trains through the
            step this lever changes.
        needs: what kind of task it needs, for the refusal message.
        argument: what ``N`` counts (None: the lever takes no number).
        requires_argument: ``name`` alone is refused (``synthetic`` needs how many queries).
        cost_key: the lever's keys in ``details["levers"]``: ``<cost_key>_seconds`` and
            ``<cost_key>_cached`` (None: the lever costs nothing beyond training).
        work: what its seconds are spent on, for the report's words ("generation").
        describe: the optional number -> a phrase ("800 synthetic queries").
    """

    name: str
    summary: str
    overrides: Callable[[int | None], list[str]]
    accepts: Callable[[Any], bool]
    needs: str
    argument: str | None = None
    requires_argument: bool = False
    cost_key: str | None = None
    work: str = "work"
    describe: Callable[[int | None], str] | None = None


LEVERS: Registry[Lever] = Registry("lever", OPTION)


def register_lever(lever: Lever) -> Lever:
    """Add ``lever`` to :data:`LEVERS` under its name."""
    LEVERS.register(lever.name)(lever)
    return lever


def _any_task(spec: Any) -> bool:
    return True


def _declared(section: str) -> Callable[[Any], bool]:
    """The task lists the lever's config section in ``TaskSpec.levers`` (it applies it to its rows)."""
    return lambda spec: section in getattr(spec, "levers", ())


def _text_pairs(spec: Any) -> bool:
    # synthetic.queries lives in its own section (tunewise.data.synthetic_config) that a task may not
    # declare: it needs a text model trained on (query, positive) rows (the contrastive step),
    # asked of the spec, never of a task's name.
    memory = spec.memory
    declared = "synthetic" in getattr(spec, "levers", ())
    return declared or (spec.modality == "text" and memory is not None and memory.step == "contrastive")


register_lever(Lever("none", "no lever: the plain sweep every lever is compared with",
                     overrides=lambda n: [], accepts=_any_task, needs="any task",
                     describe=lambda n: "no lever"))
register_lever(Lever(
    "hard-negatives", "mine hard negatives for each labeled pair with the pre-trained model",
    overrides=lambda n: ["data.hard_negatives.mine=true", *([f"data.hard_negatives.per_pair={n}"] if n else [])],
    accepts=_declared("hard_negatives"), needs="a text search task that trains on (query, positive) pairs",
    argument="negatives per pair", cost_key="hard_negatives", work="mining",
    describe=lambda n: f"{n} mined hard negatives per pair" if n else "mined hard negatives"))
register_lever(Lever(
    "synthetic", "synthetic queries generated for unlabeled documents",
    overrides=lambda n: [f"synthetic.queries={n}"], accepts=_text_pairs,
    needs="a text search task that trains on (query, positive) pairs", argument="synthetic queries",
    requires_argument=True, cost_key="synthetic", work="generation",
    describe=lambda n: f"{n} synthetic queries"))
register_lever(Lever(
    "augment", "augmented copies of the training text",
    overrides=lambda n: [f"data.augment.copies={n or 1}"], accepts=_declared("augment"),
    needs="a text task (search pairs or classification)", argument="copies per item",
    cost_key="augment", work="augmentation",
    describe=lambda n: f"{n or 1} augmented cop{'y' if (n or 1) == 1 else 'ies'} per item"))


@dataclass(frozen=True)
class LeverChoice:
    """One entry of ``--levers``: a lever or a ``+`` combination, each part with its number."""

    text: str
    parts: tuple[tuple[str, int | None], ...] = field(default=())

    @property
    def is_none(self) -> bool:
        return self.parts == (("none", None),)

    @property
    def levers(self) -> list[tuple[Lever, int | None]]:
        return [(LEVERS.get(name), n) for name, n in self.parts]

    def overrides(self) -> list[str]:
        """The dotted config overrides of every part, in order."""
        return [o for lever, n in self.levers for o in lever.overrides(n)]

    @property
    def cost_keys(self) -> list[str]:
        return [lever.cost_key for lever, _ in self.levers if lever.cost_key]

    @property
    def slug(self) -> str:
        """A folder name: ``synthetic:800`` -> ``synthetic-800``, ``a+b`` -> ``a_b``."""
        return re.sub(r"[^A-Za-z0-9_.-]", "-", self.text.replace("+", "_").replace(":", "-"))

    @property
    def description(self) -> str:
        """``800 synthetic queries and mined hard negatives``."""
        phrases = [lever.describe(n) if lever.describe else lever.name for lever, n in self.levers]
        return " and ".join(phrases)

    @property
    def work(self) -> str:
        works = list(dict.fromkeys(lever.work for lever, _ in self.levers if lever.cost_key))
        return " and ".join(works) if works else "extra training"


def _part(text: str, entry: str) -> tuple[str, int | None]:
    name, sep, number = text.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise TunewiseError(f"{OPTION}: empty lever name in '{entry}'; write e.g. {OPTION} none,synthetic:800")
    lever = LEVERS.get(name)  # unknown: "did you mean", and the list
    if not sep:
        if lever.requires_argument:
            raise TunewiseError(f"{OPTION}: {name} needs a number, {name}:N (N {lever.argument}), e.g. {name}:800")
        return name, None
    if lever.argument is None:
        raise TunewiseError(f"{OPTION}: {name} takes no number; got '{text.strip()}'")
    number = number.strip()
    if not re.fullmatch(r"\d+", number) or int(number) < 1:
        raise TunewiseError(f"{OPTION}: in '{text.strip()}' the number after ':' ({lever.argument}) must be a "
                            f"positive whole number, e.g. {name}:{800 if lever.requires_argument else 2}")
    return name, int(number)


def parse_levers(levers: str | Sequence[str]) -> list[LeverChoice]:
    """Parse ``none,hard-negatives,synthetic:200,hard-negatives+synthetic:800``.

    ``none`` (the plain sweep) is put first when it is missing: every gain is measured against it.

    Raises:
        TunewiseError: naming ``--levers``: an unknown name (with a suggestion), a number that is
            not a positive whole number, a number for a lever that takes none (or none for one
            that needs it), ``none`` inside a combination, an entry or a part given twice.
    """
    entries = [e.strip() for e in (levers.split(",") if isinstance(levers, str) else levers)]
    if not any(entries):
        raise TunewiseError(f"{OPTION}: name at least one lever, e.g. {OPTION} none,synthetic:800; "
                            f"choose from: {', '.join(LEVERS.names())}")
    choices: list[LeverChoice] = []
    for entry in entries:
        if not entry:
            raise TunewiseError(f"{OPTION}: an empty entry in '{','.join(entries)}'; separate levers with single commas")
        parts = tuple(_part(p, entry) for p in entry.split("+"))
        names = [n for n, _ in parts]
        if len(parts) > 1 and "none" in names:
            raise TunewiseError(f"{OPTION}: 'none' cannot be combined with other levers ('{entry}')")
        if dup := [n for n in dict.fromkeys(names) if names.count(n) > 1]:
            raise TunewiseError(f"{OPTION}: {dup[0]} appears twice in '{entry}'; give each lever once, e.g. {dup[0]}:N")
        text = "+".join(f"{n}:{k}" if k is not None else n for n, k in parts)
        if any(c.text == text for c in choices):
            raise TunewiseError(f"{OPTION}: '{text}' is listed twice")
        choices.append(LeverChoice(text, parts))
    if not any(c.is_none for c in choices):
        choices.insert(0, LeverChoice("none", (("none", None),)))
    return choices


def check_levers(choices: Sequence[LeverChoice], task_spec: Any) -> None:
    """Refuse a lever the task does not train through.

    Raises:
        TunewiseError: ``--levers: hard-negatives does not apply to task 'X' (it needs ...)``.
    """
    for choice in choices:
        for lever, _ in choice.levers:
            if not lever.accepts(task_spec):
                others = [n for n in LEVERS.names() if LEVERS.get(n).accepts(task_spec) and n != "none"]
                hint = f"; levers for this task: {', '.join(others)}" if others else "; no lever applies to this task yet"
                raise TunewiseError(f"{OPTION}: {lever.name} does not apply to task '{task_spec.name}' "
                                    f"(it needs {lever.needs}){hint}")


def lever_config(cfg: Any, choice: LeverChoice) -> Any:
    """``cfg`` with the lever's overrides applied, validated as ``fit`` validates a config.

    Raises:
        TunewiseError: ``--levers: synthetic:800: <why>`` (e.g. a key this installation lacks).
    """
    from tunewise.config import RunConfig
    from tunewise.config.files import apply_override, from_dict
    from tunewise.run import check_config

    if choice.is_none:
        return cfg
    data = cfg.to_dict()
    try:
        for assignment in choice.overrides():
            apply_override(data, assignment)
        out = from_dict(RunConfig, data)
        check_config(out)
    except TunewiseError as err:
        raise TunewiseError(f"{OPTION}: {choice.text} (sets {', '.join(choice.overrides())}): {err}") from None
    return out


def lever_folder(out: Path, choice: LeverChoice) -> Path:
    """``none``: the budget folder itself (the plain sweep); a lever: ``levers/<slug>/``."""
    return out if choice.is_none else out / "levers" / choice.slug


def _check_price_per_label(price_per_label: float | None) -> None:
    if price_per_label is not None and not (isinstance(price_per_label, (int, float)) and price_per_label >= 0):
        raise TunewiseError(f"--price-per-label: must be a non-negative amount per labeled item; got {price_per_label}")


def run_levers(
    config: Any = None,
    *,
    levers: str | Sequence[str],
    sizes: list[int] | None = None,
    seeds: int = 3,
    price_per_hour: float | None = None,
    price_per_label: float | None = None,
    time_sweep: bool = True,
    lever_time_sweep: bool = False,
    output_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    console: Any = None,
    progress: Callable[[int, int, str], None] | None = None,
    **budget_options: Any,
):
    """Measure every lever at every labeled size and price it against the plain sweep.

    Args:
        config: anything :func:`tunewise.fit` accepts.
        levers: ``"none,hard-negatives,synthetic:800"`` or a list of such entries.
        sizes, seeds: the data grid, the same for every lever.
        price_per_hour: machine price: lever seconds and training seconds become money.
        price_per_label: cost of one more labeled item: the words then say which is cheaper.
        time_sweep: the plain sweep's time sweep (as ``run_budget``).
        lever_time_sweep: also run a time sweep for each lever (off: levers are priced on data).
        output_dir: the budget folder (default ``<config output_dir>-budget``).
        overrides: dotted ``key=value`` applied on top of a YAML config.
        console, progress: as :func:`tunewise.budget.run_budget`.
        **budget_options: other :func:`tunewise.budget.run_budget` arguments (``backend``,
            ``fresh``, ``drop``, ``adaptive``, ...); ``target``, ``forecast_sizes``, ``validate``,
            ``epochs``, ``eval_steps``, ``time_size`` and ``time_from_largest`` go to the plain sweep only.

    Returns:
        :class:`~tunewise.budget.lever_report.LeverResult` (``levers.md``, ``levers.json`` and
        ``levers.png`` are in the budget folder).

    Raises:
        TunewiseError: bad levers (see :func:`parse_levers`, :func:`check_levers`), levers with
            ``eval.folds``, and everything ``run_budget`` refuses; all before any training.
    """
    from rich.console import Console

    from tunewise.budget.advice import check_price_per_hour
    from tunewise.budget.lever_report import build_lever_result
    from tunewise.budget.sweep import run_budget
    from tunewise.run import as_config
    from tunewise.tasks.base import TASKS

    choices = parse_levers(levers)
    check_price_per_hour(price_per_hour)
    _check_price_per_label(price_per_label)
    cfg = as_config(config, overrides)
    if cfg.eval.folds:
        raise TunewiseError(f"{OPTION}: not with --folds (eval.folds={cfg.eval.folds}) yet: levers are compared on one "
                            "split; drop --folds, or run the lever sweeps one by one with --set")
    check_levers(choices, TASKS.get(cfg.task).spec)
    configs = [lever_config(cfg, c) for c in choices]  # every lever's config fails here, before training
    console = console or Console(stderr=True)
    out = Path(output_dir if output_dir is not None else f"{str(cfg.output_dir).rstrip('/')}-budget").expanduser()
    plain_only = {k: budget_options.pop(k) for k in ("target", "forecast_sizes", "validate", "epochs", "eval_steps",
                                                      "time_size", "time_from_largest") if k in budget_options}
    results = {}
    for i, (choice, lever_cfg) in enumerate(zip(choices, configs), start=1):
        console.print(f"[bold]lever {i}/{len(choices)}: {choice.text}[/]"
                      + (f" ({', '.join(choice.overrides())})" if choice.overrides() else " (the plain sweep)"))

        def lever_progress(done: int, total: int, what: str, _name: str = choice.text) -> None:
            if progress is not None:
                progress(done, total, f"{_name} · {what}")  # no [brackets]: rich reads them as markup

        results[choice.text] = run_budget(
            lever_cfg, output_dir=lever_folder(out, choice), sizes=sizes, seeds=seeds, price_per_hour=price_per_hour,
            time_sweep=time_sweep if choice.is_none else (time_sweep and lever_time_sweep), console=console,
            progress=lever_progress if progress is not None else None,
            **budget_options, **(plain_only if choice.is_none else {}))
    return build_lever_result(out, choices, results, unit=TASKS.get(cfg.task).spec.unit, price_per_hour=price_per_hour,
                              price_per_label=price_per_label)


def lever_names_help() -> str:
    """One line per registered lever, for ``--help`` and the README."""
    lines = []
    for name in LEVERS.names():
        lever = LEVERS.get(name)
        arg = f"[:N]  N = {lever.argument}" if lever.argument and not lever.requires_argument else (
            f":N  N = {lever.argument}" if lever.argument else "")
        lines.append(f"{name}{arg}: {lever.summary}")
    return "\n".join(lines)


__all__ = ["LEVERS", "Lever", "LeverChoice", "register_lever", "parse_levers", "check_levers", "lever_config",
           "lever_folder", "run_levers", "lever_names_help"]
