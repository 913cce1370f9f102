"""Metrics on generated text and on held-out token losses: pure functions, no model here.

* exact match after whitespace normalisation;
* format checks a user chooses: valid JSON, a regular expression that must match the whole
  output, or (Python API only) any callable ``text -> bool``;
* perplexity from the summed token negative log-likelihood.

The causal-LM task (:mod:`tunewise.tasks.causal_lm`) generates and sums losses; everything
that turns those into numbers is here, so it is tested without a model.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from tunewise.errors import TunewiseError

FormatCheck = Callable[[str], bool]

# Callables given in Python are kept here and named in the config as "python:<module>.<name>",
# so the config stays a plain, dumpable mapping. A YAML file cannot put one here: configs
# never import code by a dotted path (see the registry module).
_PYTHON_CHECKS: dict[str, FormatCheck] = {}


def normalize(text: str) -> str:
    """Collapse runs of whitespace and strip the ends (so "a\\n b " equals "a b")."""
    return " ".join(str(text).split())


def exact_match(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Share of outputs equal to their reference after :func:`normalize`.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    if not outputs:
        return 0.0
    return sum(normalize(o) == normalize(r) for o, r in zip(outputs, references)) / len(outputs)


def is_valid_json(text: str) -> bool:
    """True when the whole text (surrounding whitespace aside) parses as one JSON value."""
    try:
        json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False
    return True


def regex_check(pattern: str) -> FormatCheck:
    """A check that the whole (stripped) output matches ``pattern`` (``re.fullmatch``, DOTALL).

    Raises:
        TunewiseError: the pattern does not compile.
    """
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise TunewiseError(f"llm.format_check: invalid regular expression {pattern!r} ({err})") from None
    return lambda text: compiled.fullmatch(str(text).strip()) is not None


def check_format_spec(spec: Any) -> str:
    """Validate a ``llm.format_check`` value and return its config form.

    Args:
        spec: ``"none"``, ``"json"``, ``"regex:<pattern>"``, or a callable ``text -> bool``
            (Python API only; it is registered and named ``"python:<module>.<qualname>"``).

    Returns:
        The string stored in the config.

    Raises:
        TunewiseError: an unknown spec, an invalid pattern, or a ``python:`` name that was
            not given as a callable in this process (e.g. typed into a YAML file).
    """
    if callable(spec):
        name = f"python:{getattr(spec, '__module__', '?')}.{getattr(spec, '__qualname__', type(spec).__name__)}"
        _PYTHON_CHECKS[name] = spec
        return name
    if not isinstance(spec, str):
        raise TunewiseError(f"llm.format_check: expected none, json or regex:<pattern>, got {type(spec).__name__} {spec!r}")
    text = spec.strip()
    if text.lower() in ("none", "json"):
        return text.lower()
    if text.startswith("regex:"):
        if not text[len("regex:"):]:
            raise TunewiseError("llm.format_check: 'regex:' needs a pattern, e.g. regex:^SELECT .*;$")
        regex_check(text[len("regex:"):])
        return text
    if text.startswith("python:"):
        if text not in _PYTHON_CHECKS:
            raise TunewiseError(
                f"llm.format_check: {text} is a Python callable, which only the Python API accepts: "
                "set config.llm.format_check = your_function (or load_check('package.module:function'))"
            )
        return text
    raise TunewiseError(
        f"llm.format_check: unknown check '{spec}'; use none, json or regex:<pattern> "
        "(a Python callable is accepted from the Python API)"
    )


def resolve_format_check(spec: str) -> FormatCheck | None:
    """The callable for a validated spec (None for ``"none"``)."""
    spec = check_format_spec(spec)
    if spec == "none":
        return None
    if spec == "json":
        return is_valid_json
    if spec.startswith("regex:"):
        return regex_check(spec[len("regex:"):])
    return _PYTHON_CHECKS[spec]


def load_check(path: str) -> FormatCheck:
    """Import a format check given by path, ``"package.module:function"`` (Python API only).

    Example:
        >>> cfg.llm.format_check = load_check("my_checks:is_sql")

    Raises:
        TunewiseError: the module or the attribute is missing, or it is not callable.
    """
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise TunewiseError(f"format check: expected 'package.module:function', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise TunewiseError(f"format check: cannot import {module_name} ({err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TunewiseError(f"format check: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TunewiseError(f"format check: {path} is not callable")
    return obj


def format_validity(outputs: Sequence[str], check: FormatCheck) -> list[bool]:
    """Apply ``check`` to every output; a check that raises counts as invalid, not as a crash."""
    flags = []
    for text in outputs:
        try:
            flags.append(bool(check(text)))
        except Exception:  # a user's check failing on odd output means "not in the format"
            flags.append(False)
    return flags


def perplexity(nll_sum: float, n_tokens: int) -> tuple[float, float]:
    """Mean token loss and perplexity ``exp(nll_sum / n_tokens)``.

    Args:
        nll_sum: summed negative log-likelihood (nats) over the scored tokens.
        n_tokens: how many tokens were scored (the completion tokens only).

    Returns:
        ``(mean_loss, perplexity)``; perplexity is capped at ``exp(50)`` so that an untrained
        model's number stays printable.

    Raises:
        ValueError: no tokens were scored.
    """
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    mean = nll_sum / n_tokens
    return mean, math.exp(min(mean, 50.0))


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop string (end-of-turn markers a template writes as text)."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def generation_metrics(outputs: Sequence[str], references: Sequence[str],
                       check: FormatCheck | None) -> tuple[dict[str, float], list[bool], list[bool]]:
    """Exact match and (when a check is set) format validity over the generated outputs.

    Returns:
        ``(metrics, correct_flags, format_flags)``; format flags are all True without a check.
    """
    correct = [normalize(o) == normalize(r) for o, r in zip(outputs, references, strict=True)]
    metrics = {"exact_match": sum(correct) / len(correct) if correct else 0.0}
    if check is None:
        return metrics, correct, [True] * len(outputs)
    valid = format_validity(outputs, check)
    metrics["format_valid"] = sum(valid) / len(valid) if valid else 0.0
    return metrics, correct, valid
