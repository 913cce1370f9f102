"""``tunewise memory``: will this fine-tuning run fit? (parses options, calls :func:`tunewise.memory.plan`, prints)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from tunewise.cli._errors import handle_errors

TASK_HELP = "A registered task (or alias): {names} (default: {default}). Its memory profile picks the step the estimate models."


class _TaskHelpCommand(TyperCommand):
    """Lists the registered tasks in ``--task``'s help when help is shown (importing every
    task at start-up would slow down every other command)."""

    def format_help(self, ctx, formatter) -> None:
        from tunewise.memory.plan import default_task
        from tunewise.tasks import TASKS

        for param in self.params:
            if param.name == "task":
                param.help = TASK_HELP.format(names=", ".join(TASKS), default=default_task())
        super().format_help(ctx, formatter)


def _why(est, fmt, shape: str) -> str:
    """One sentence on why the estimate differs from the 2.5 x model size rule of thumb."""
    from tunewise.memory.params import OPTIMIZER_STATE_BYTES

    s = est.inputs
    if est.total_bytes < est.rule_of_thumb_bytes:
        share = est.trainable_params / max(1, est.params)
        return f"the rule assumes every weight trains; {s['strategy']} trains {share:.2%} of them"
    reasons = []
    if s["strategy"] in ("full", "partial") and s["optimizer"] != "sgd":
        per_param = 4 + OPTIMIZER_STATE_BYTES[s["optimizer"]]
        reasons.append(f"gradients and {s['optimizer']} states ({per_param:g} B/param: {fmt(est.trainable_params * per_param)})")
    reasons.append(f"activations ({fmt(est.activations_peak_bytes)} at {shape})")
    if est.overhead_bytes > 0.25 * est.total_bytes:
        reasons.append(f"the framework's own memory ({fmt(est.overhead_bytes)})")
    return "the rule ignores " + ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]


def memory(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder or hub id (default: the task's packaged "
                                        "model). Only its config is read (image backbones without one are loaded)."),
    task: Optional[str] = typer.Option(None, "--task", show_default=False,
                                       help=TASK_HELP.format(names="see tunewise memory --help", default="a run config's")),
    strategy: str = typer.Option("full", "--strategy", help="head, partial, full, lora or qlora."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 / fp16 (mixed, fp32 master weights) or 4bit (QLoRA base)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, adamw8bit or sgd."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per step."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per text (padded/truncated length; default 128, "
                                          "or the model's limit when lower)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image side for vision models (default: the config's, else 224)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                help="Recompute activations in backward."),
    lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank r."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Adapted projections, comma-separated among "
                                               "q,k,v,o,mlp_in,mlp_out, or all (default: the task's: all where it adapts "
                                               "every linear layer, else q,v)."),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default: tunewise's, 0.05; "
                                                 "each adapted layer then keeps its own dropped input)."),
    texts_per_example: Optional[int] = typer.Option(None, "--texts-per-example", help="Inputs encoded per example (default: "
                                                    "the task's; 2 texts for a contrastive step: anchor + positive)."),
    trainable_layers: Optional[int] = typer.Option(None, "--trainable-layers", help="Top blocks trained by --strategy partial."),
    num_labels: int = typer.Option(2, "--num-labels", help="Classes of a class head."),
    device: str = typer.Option("auto", "--device", help="cpu or cuda to estimate for (auto: cuda if present, or if --device-memory is given)."),
    device_memory: Optional[str] = typer.Option(None, "--device-memory", help="Memory to fit in, e.g. 24GB, 24GiB, 512MB "
                                                "(default: what is free on the device)."),
    headroom: float = typer.Option(0.10, "--headroom", help="Fraction of the memory kept free."),
    cpu_allocator: str = typer.Option("auto", "--cpu-allocator", help="CPU runs, as train.cpu_allocator: auto (trim when the "
                                      "estimate is over half the memory), trim, or default (glibc keeps freed blocks: added)."),
    family: Optional[str] = typer.Option(None, "--family", help="Architecture family when the config is unknown: encoder, decoder, vit, clip, cnn."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="Override/provide the hidden size."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="Override/provide the number of blocks."),
    num_heads: Optional[int] = typer.Option(None, "--num-heads", help="Override/provide attention heads."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="Override/provide key/value heads (GQA)."),
    intermediate_size: Optional[int] = typer.Option(None, "--intermediate-size", help="Override/provide the MLP width."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="Override/provide the vocabulary size."),
    patch_size: Optional[int] = typer.Option(None, "--patch-size", help="Override/provide the ViT patch size."),
    num_params: Optional[int] = typer.Option(None, "--num-params", help="Override the parameter count."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Estimate peak training memory (weights, gradients, optimizer, activations, overhead) and whether it fits."""
    from tunewise.errors import TunewiseError
    from tunewise.memory import plan

    if device_memory is not None and not str(device_memory).strip():
        raise TunewiseError("--device-memory: empty; write e.g. 24GB")
    result = plan(
        model, task=task, strategy=strategy, precision=precision, optimizer=optimizer, batch_size=batch_size, seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank, lora_targets=_roles(lora_targets),
        lora_dropout=lora_dropout, image_size=image_size, texts_per_example=texts_per_example,
        trainable_layers=trainable_layers, num_labels=num_labels, device=device, device_memory=device_memory,
        headroom=headroom, cpu_allocator=cpu_allocator, family=family, hidden=hidden_size, n_layers=num_layers,
        heads=num_heads, kv_heads=kv_heads, intermediate=intermediate_size, vocab=vocab_size, patch_size=patch_size,
        n_params=num_params,
    )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return
    _render(Console(), result)


def _roles(value: str | None) -> tuple[str, ...] | None:
    """``--lora-targets q,v`` / ``all`` as the estimator's roles (checked there)."""
    from tunewise.errors import TunewiseError

    if value is None:
        return None
    roles = tuple(r.strip() for r in value.split(",") if r.strip())
    if not roles:
        raise TunewiseError("--lora-targets: empty; write e.g. q,v or all")
    return roles


def _render(console: Console, result) -> None:
    from tunewise.memory import format_bytes

    spec, advice, est = result.spec, result.advice, result.estimate
    s = est.inputs
    ckpt = ", gradient checkpointing" if s["gradient_checkpointing"] else ""
    images = spec.family in ("vit", "cnn")  # an image model sees pixels, not tokens
    shape = (f"batch {s['batch_size']} x {s['image_size'] or spec.image_size or 224} px images" if images
             else f"batch {s['batch_size']} x {s['seq_len']} tokens")
    console.print(
        f"[bold]{spec.source or spec.family}[/bold] ({spec.family}, {est.params / 1e6:,.1f}M params, {est.trainable_params / 1e6:,.2f}M trainable)\n"
        f"{result.task} ({s['step']} step), {s['strategy']}, {s['precision']}, {s['optimizer']}, {shape}{ckpt}, on {s['device']}"
    )
    table = Table(title=f"Estimated peak training memory (peak during the {est.peak_phase})")
    table.add_column("component")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    for name, value in est.components().items():
        table.add_row(name, format_bytes(value), f"{100 * value / est.total_bytes:.0f}%")
    table.add_row("[bold]total[/bold]", f"[bold]{format_bytes(est.total_bytes)}[/bold]", "100%")
    table.add_row("the common rule of thumb: 2.5 x model size", format_bytes(est.rule_of_thumb_bytes),
                  f"{100 * est.rule_of_thumb_bytes / est.total_bytes:.0f}%")
    console.print(table)
    ratio = est.total_bytes / max(1, est.rule_of_thumb_bytes)
    console.print(f"The estimate is {ratio:.1f}x the rule of thumb: {_why(est, format_bytes, shape)}.")
    for note in est.notes:
        console.print(f"[dim]- {note}[/dim]")
    verdict = "[green]fits[/green]" if advice.fits else "[red]does not fit[/red]"
    console.print(f"{verdict} in {format_bytes(advice.budget_bytes)} ({advice.budget_source}; {format_bytes(advice.usable_bytes)} usable "
                  f"with {advice.headroom:.0%} headroom).")
    if not advice.fits:
        if not advice.alternatives:
            console.print("No single change or pair of changes fits; use a smaller model or a larger device.")
            return
        alt = Table(title="Changes that fit, best first")
        alt.add_column("#", justify="right")
        alt.add_column("change")
        alt.add_column("estimated peak", justify="right")
        for i, a in enumerate(advice.alternatives, 1):
            alt.add_row(str(i), a.change, format_bytes(a.estimate.total_bytes))
        console.print(alt)


def register(app: typer.Typer) -> None:
    """Add ``tunewise memory`` to ``app``."""
    app.command("memory", cls=_TaskHelpCommand)(handle_errors(memory))
