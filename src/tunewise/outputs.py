"""Run outputs: an atomically published folder, metrics.json and the model card.

A run writes into a hidden staging folder next to the target and renames it into place
only when everything is written, so an interrupted or failed run never leaves a folder
that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.evaluate.uncertainty import describe, p_value_line
from tunewise.files import finite_json, umask, write_json, write_text  # noqa: F401 - the writers run() and the tasks use


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Fail before any work when the output folder exists and may not be replaced."""
    out = Path(path).expanduser()
    if out.exists() and not overwrite:
        raise TunewiseError(f"output_dir: {out} already exists; choose another folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise TunewiseError(f"output_dir: {out} is a file; choose a folder path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # the staging folder is made beside the target: prove it can be, before any work
        probe = out.parent / f".{out.name}.probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        where = out.parent if out.parent.exists() else out
        raise TunewiseError(f"output_dir: cannot write in {where} ({err.strerror}); choose a folder you can write to") from None
    return out


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``target``, on failure it is removed."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(stale.name.rsplit("-", 1)[-1])
            if not _pid_alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _umask_modes(staging)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask_modes(folder: Path) -> None:
    """Give every file and folder of a run the permissions the user's umask gives new files
    (libraries' temp-file writes leave some of them private, 0600)."""
    mask = umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("tunewise", "torch", "transformers", "sentence-transformers", "peft", "accelerate", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f}%" if pct else f"{value:.4f}"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(name: Any) -> str | None:
    """``name`` when it is a Hugging Face Hub repo id (``org/name``), not a local folder or a packaged default."""
    if not isinstance(name, str) or not _HUB_ID.match(name) or ".." in name:
        return None
    return None if Path(name).expanduser().exists() else name


def split_front_matter(card: str) -> tuple[dict[str, Any], str]:
    """A card's YAML front matter (``yaml.safe_load``) and the Markdown after it."""
    import yaml

    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end != -1:
            meta = yaml.safe_load(card[4:end]) or {}
            return (meta if isinstance(meta, dict) else {}), card[end + 4:].lstrip("\n")
    return {}, card


def card_metadata(metrics: dict[str, Any], *, library: str, pipeline_tag: str, evaluated_on: str,
                  library_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's front matter as the Hub reads it (``huggingface_hub.ModelCardData``).

    * ``base_model``: the model the run started from, when it is a Hub id (a local folder or a
      packaged default has none the Hub could link).
    * ``datasets`` is left out: tunewise trains on local files, which are no Hub datasets; the
      model-index names the file instead.
    * ``model-index``: one result on the run's held-out split; each metric's ``value`` is the
      fine-tuned score and its ``args`` the pre-trained score, the difference and (where
      metrics.json has them) its bootstrap interval and paired-test p-value.
    * ``library_meta``: the library's own card metadata (sentence-transformers' tags and its
      own evaluations), kept; tunewise's keys win where both set one, tags are merged.
    """
    meta: dict[str, Any] = dict(library_meta or {})
    base = hub_id(metrics.get("base_model"))
    tags = ["tunewise", metrics["task"], f"strategy-{metrics['strategy']['name']}"]
    ours: dict[str, Any] = {"base_model": base} if base else {}
    ours.update({"library_name": library, "pipeline_tag": pipeline_tag,
                 "tags": list(dict.fromkeys([*tags, *(meta.get("tags") or [])]))})
    uncertainty = metrics.get("uncertainty", {})
    entries = []
    for name, after in metrics["after"].items():
        if not isinstance(after, (int, float)) or after != after:  # None / NaN: nothing to report
            continue
        args: dict[str, Any] = {"pretrained": metrics["before"].get(name), "primary": name == metrics["primary_metric"]}
        interval = uncertainty.get(name) or {}
        for key in ("difference", "abs_low", "abs_high", "confidence", "p_value", "n"):
            if interval.get(key) is not None:
                args[key] = interval[key]
        entries.append({"type": name, "value": float(after), "name": f"{name} (fine-tuned)", "args": args})
    source = Path(str(metrics.get("config", {}).get("data", {}).get("train") or "data"))
    result = {"task": {"type": pipeline_tag, "name": metrics["task"]},
              "dataset": {"type": source.stem or "data", "name": f"{source.name}, held-out split ({evaluated_on})",
                          "split": "held-out"},
              "metrics": entries}
    own_index = meta.pop("model-index", None) or []
    kept = [r for entry in own_index if isinstance(entry, dict) for r in entry.get("results", [])]
    name = Path(str(metrics.get("config", {}).get("output_dir") or "tunewise-model")).name
    ours["model-index"] = [{"name": name, "results": [result, *kept]}]
    return {**ours, **{k: v for k, v in meta.items() if k not in ours}}


def model_card(metrics: dict[str, Any], *, library: str, pipeline_tag: str, usage: str, evaluated_on: str,
               train_keys: tuple[str, ...] = (), library_card: str | None = None) -> str:
    """A Hugging Face model card (README.md) with the before/after metrics.

    The keyword arguments come from the task's ``card_info``; ``train_keys`` names the
    ``train`` options the task wants listed before the learning rate (embedding: the loss);
    ``library_card`` is the card the model's own library would write (sentence-transformers):
    its front matter is merged into tunewise's (:func:`card_metadata`) and its sections follow
    tunewise's.
    """
    import yaml

    before, after = metrics["before"], metrics["after"]
    rel = metrics["relative_improvement"]
    train = metrics["train"]
    memory = metrics.get("memory", {})
    library_meta, library_body = split_front_matter(library_card) if library_card else ({}, "")
    meta = card_metadata(metrics, library=library, pipeline_tag=pipeline_tag, evaluated_on=evaluated_on,
                         library_meta=library_meta)
    lines = [
        "---",
        yaml.safe_dump(finite_json(meta), sort_keys=False, allow_unicode=True, width=1000).rstrip("\n"),
        "---",
        "",
        f"# Fine-tuned with tunewise ({metrics['task']}, strategy `{metrics['strategy']['name']}`)",
        "",
        f"Base model: `{metrics['base_model']}`. Evaluated on {evaluated_on}; "
        "the same evaluation scored the pre-trained model first.",
        "",
        *[f"> **Warning:** {warning}\n" for warning in metrics.get("warnings", [])],
        "| metric | pre-trained | fine-tuned | relative improvement |",
        "|---|---:|---:|---:|",
    ]
    uncertainty = metrics.get("uncertainty", {})
    for name in before:
        marker = " (primary)" if name == metrics["primary_metric"] else ""
        lines.append(f"| {name}{marker} | {_fmt(before[name])} | {_fmt(after.get(name))} | "
                     f"{describe(rel.get(name), uncertainty.get(name))} |")
    if (line := p_value_line(metrics["primary_metric"], uncertainty.get(metrics["primary_metric"]))):
        lines += ["", f"Uncertainty: {line} (paired bootstrap over the evaluation items, "
                      f"{uncertainty[metrics['primary_metric']]['resamples']} resamples)."]
    lines += [
        "",
        "## Training",
        "",
        f"- examples: {train['examples']} ({metrics['data'].get('kind', '')}), epochs: {train['epochs']:g}, steps: {train['steps']}",
        f"- training time: {train['seconds']:.1f} s, {train['samples_per_second']:.1f} examples/s",
        f"- trainable parameters: {metrics['strategy']['trainable_params']:,} of {metrics['strategy']['total_params']:,}",
        f"- peak memory: {memory.get('peak_mib', 'n/a')} MiB ({memory.get('method', 'not measured')})",
        *([f"- early stopping: kept step {es['best_step']} (epoch {es['best_epoch']}, validation {es['metric']} "
           f"{es['value']:.4f}): {es['reason']}"] if (es := metrics.get("early_stopping")) else []),
        *([f"- resumed after an interruption from step {rs['from_step']} (epoch {rs['from_epoch']:g}); "
           f"{rs['seconds_lost']:.0f} s of training redone"] if (rs := metrics.get("resumed")) else []),
        "- " + "".join(f"{key}: {metrics['config']['train'][key]}, " for key in train_keys)
        + f"learning rate {metrics['config']['train']['learning_rate']}, "
        f"batch size {metrics['config']['train']['batch_size']}, seed {metrics['config']['seed']}",
        "",
        "## Usage",
        "",
        "```python",
        usage.strip(),
        "```",
        "",
        "The full configuration and every number above are in `metrics.json` and `config.yaml` beside this file.",
        "",
    ]
    if (first := re.search(r"^## ", library_body, re.MULTILINE)) is not None:  # the library's sections, after its title
        lines += [f"# From the {library} model card", "", library_body[first.start():].strip(), ""]
    return "\n".join(lines)
