"""Run outputs: an atomically published folder, metrics.json and the model card.

A run writes into a hidden staging folder next to the target and renames it into place
only when everything is written, so an interrupted or failed run never leaves a folder
that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.evaluate.uncertainty import describe, p_value_line
from tunewise.files import umask, write_json, write_text  # noqa: F401 - the writers run() and the tasks use


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


def model_card(metrics: dict[str, Any], *, library: str, pipeline_tag: str, usage: str, evaluated_on: str,
               train_keys: tuple[str, ...] = ()) -> str:
    """A Hugging Face model card (README.md) with the before/after metrics.

    The keyword arguments come from the task's ``card_info``; ``train_keys`` names the
    ``train`` options the task wants listed before the learning rate (embedding: the loss).
    """
    before, after = metrics["before"], metrics["after"]
    rel = metrics["relative_improvement"]
    train = metrics["train"]
    memory = metrics.get("memory", {})
    lines = [
        "---",
        f"library_name: {library}",
        f"pipeline_tag: {pipeline_tag}",
        "tags:",
        "- tunewise",
        f"- {metrics['task']}",
        f"- strategy-{metrics['strategy']['name']}",
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
    return "\n".join(lines)
