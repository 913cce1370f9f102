"""YAML in and out: read a config file, apply dotted ``--set`` overrides, dump, and the reference table."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from tunewise.config.coerce import from_dict
from tunewise.config.schema import SECTIONS, RunConfig, load_extensions
from tunewise.errors import TunewiseError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise TunewiseError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TunewiseError(f"{path}: not UTF-8 text; re-save the config as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise TunewiseError(f"{path}:{line} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunewiseError(f"{path}: the config must be a mapping of keys (task, model, data, train...), got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML)."""
    if "=" not in assignment:
        raise TunewiseError(f"--set: expected key=value (e.g. train.epochs=2), got '{assignment}'")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunewiseError(f"--set: empty key in '{assignment}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "strategy":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise TunewiseError(f"--set {key}: '{part}' is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """Load a run config: YAML file, then ``values`` (dotted keys), then ``--set`` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``["train.epochs=2", ...]`` as typed on the command line.
        values: dotted keys set by named CLI flags (None values are ignored).

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        TunewiseError: unknown keys (with a suggestion), wrong types, invalid values.
    """
    data = read_yaml(path) if path is not None else {}
    for key, value in (values or {}).items():
        if value is not None:
            apply_override(data, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                           if not isinstance(value, str) else f"{key}={_quote(value)}")
    for assignment in overrides or []:
        apply_override(data, assignment)
    return from_dict(RunConfig, data)


def _quote(value: str) -> str:
    # A path such as "1e-5" or "yes" must stay a string when re-parsed.
    return yaml.safe_dump(value, default_style='"').strip()


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, suitable for ``tunewise fit``."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def config_reference() -> str:
    """A Markdown reference of every config key, its default and its help text."""
    lines = ["| key | default | meaning |", "|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("sections"):
                for name, section in SECTIONS.items():
                    walk(section, f"{prefix}{name}.")
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = ""
            shown = "" if default is None else json.dumps(default, default=str, ensure_ascii=False)
            lines.append(f"| `{prefix}{f.name}` | `{shown}` | {f.metadata.get('help', '').replace('{tasks}', tasks)} |")

    load_extensions()
    from tunewise.tasks.base import TASKS

    tasks = ", ".join(f"{name} ({TASKS.get(name).spec.summary})" for name in TASKS)
    walk(RunConfig, "")
    return "\n".join(lines)
