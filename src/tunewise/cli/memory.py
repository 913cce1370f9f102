"""``tunewise memory``: will this fine-tuning run fit? (parses options, calls tunewise.memory)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tunewise.cli._errors import handle_errors

def _why(est, fmt) -> str:
    """One sentence on why the estimate differs from seed 001's 2.5x rule."""
    s = est.inputs
    if est.total_bytes < est.rule_of_thumb_bytes:
        share = est.trainable_params / max(1, est.params)
        return f"the rule assumes every weight trains; {s['strategy']} trains {share:.2%} of them"
    reasons = []
    if s["strategy"] in ("full", "partial") and s["optimizer"] != "sgd":
        from tunewise.memory.estimate import OPTIMIZER_STATE_BYTES

        per_param = 4 + OPTIMIZER_STATE_BYTES[s["optimizer"]]
        reasons.append(f"gradients and {s['optimizer']} states ({per_param:g} B/param: {fmt(est.trainable_params * per_param)})")
    reasons.append(f"activations ({fmt(est.activations_peak_bytes)} at batch {s['batch_size']} x {s['seq_len']} tokens)")
    if est.overhead_bytes > 0.25 * est.total_bytes:
        reasons.append(f"the framework's own memory ({fmt(est.overhead_bytes)})")
    return "the rule ignores " + ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]


def memory(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder or hub id (default: packaged all-MiniLM-L6-v2). Only its config is read."),
    task: str = typer.Option("embedding", "--task", help="embedding, classification, causal_lm or image."),
    strategy: str = typer.Option("full", "--strategy", help="head, partial, full, lora or qlora."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 / fp16 (mixed, fp32 master weights) or 4bit (QLoRA base)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, adamw8bit or sgd."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per step."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per text (padded/truncated length)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image side for vision models (default: the config's)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward."),
    lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank r."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Adapted projections, comma-separated among q,k,v,o,mlp_in,mlp_out, or all (default: tunewise's: all for causal_lm, else q,v)."),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default: tunewise's, 0.05; each adapted layer then keeps its own dropped input)."),
    texts_per_example: Optional[int] = typer.Option(None, "--texts-per-example", help="Texts encoded per example (embedding default 2: anchor + positive)."),
    trainable_layers: Optional[int] = typer.Option(None, "--trainable-layers", help="Top blocks trained by --strategy partial."),
    num_labels: int = typer.Option(2, "--num-labels", help="Classes for classification/image heads."),
    device: str = typer.Option("auto", "--device", help="cpu or cuda to estimate for (auto: cuda if present, or if --device-memory is given)."),
    device_memory: Optional[str] = typer.Option(None, "--device-memory", help="Memory to fit in, e.g. 24GB, 24GiB, 512MB (default: what is free on the device)."),
    headroom: float = typer.Option(0.10, "--headroom", help="Fraction of the memory kept free."),
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
    from tunewise.memory import advise, available_memory, load_arch, parse_memory_size

    for name, value in (("--device-memory", device_memory),):
        if value is not None and not str(value).strip():
            raise TunewiseError(f"{name}: empty; write e.g. 24GB")
    budget = parse_memory_size(device_memory) if device_memory is not None else None
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise TunewiseError(f"--device: unknown '{device}'; use auto, cpu or cuda")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() or budget is not None else "cpu"
    overrides = dict(family=family, hidden=hidden_size, n_layers=num_layers, heads=num_heads, kv_heads=kv_heads,
                     intermediate=intermediate_size, vocab=vocab_size, patch_size=patch_size, n_params=num_params)
    spec = load_arch(model, **overrides)
    settings = dict(task=task, strategy=strategy, precision=precision, optimizer=optimizer, batch_size=batch_size,
                    seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank,
                    lora_targets=_roles(lora_targets), image_size=image_size, texts_per_example=texts_per_example,
                    trainable_layers=trainable_layers, num_labels=num_labels, device=device)
    if lora_dropout is not None:  # else the estimator's default, tunewise's own
        settings["lora_dropout"] = lora_dropout
    if budget is not None:
        source = "--device-memory"
    else:
        budget, source = available_memory(device)
    result = advise(spec, settings, budget, budget_source=source, headroom=headroom)
    from tunewise.memory.runs import auto_trims

    if device == "cpu" and not auto_trims(result.estimate.total_bytes, result.budget_bytes):
        # as a run's train.cpu_allocator=auto: glibc's default allocator (faster) when memory is
        # plentiful, which keeps freed blocks; trimming is chosen when the estimate is tight.
        from dataclasses import replace

        from tunewise.memory.estimate import with_cpu_allocator

        result = replace(result, estimate=with_cpu_allocator(result.estimate, "default"))
    if as_json:
        print(json.dumps({"model": spec.source, "estimate": result.estimate.as_dict(), "advice": result.as_dict()}, indent=2, default=str))
        return
    _render(Console(), spec, result)


def _roles(value: str | None) -> tuple[str, ...] | None:
    """``--lora-targets q,v`` / ``all`` as the estimator's roles (checked there)."""
    from tunewise.errors import TunewiseError

    if value is None:
        return None
    roles = tuple(r.strip() for r in value.split(",") if r.strip())
    if not roles:
        raise TunewiseError("--lora-targets: empty; write e.g. q,v or all")
    return roles


def _render(console: Console, spec, result) -> None:
    from tunewise.memory import format_bytes

    est = result.estimate
    s = est.inputs
    ckpt = ", gradient checkpointing" if s["gradient_checkpointing"] else ""
    console.print(
        f"[bold]{spec.source or spec.family}[/bold] ({spec.family}, {est.params / 1e6:,.1f}M params, {est.trainable_params / 1e6:,.2f}M trainable)\n"
        f"{s['task']}, {s['strategy']}, {s['precision']}, {s['optimizer']}, batch {s['batch_size']} x seq {s['seq_len']}{ckpt}, on {s['device']}"
    )
    table = Table(title=f"Estimated peak training memory (peak during the {est.peak_phase})")
    table.add_column("component")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    for name, value in est.components().items():
        table.add_row(name, format_bytes(value), f"{100 * value / est.total_bytes:.0f}%")
    table.add_row("[bold]total[/bold]", f"[bold]{format_bytes(est.total_bytes)}[/bold]", "100%")
    table.add_row("seed 001's rule: 2.5 x model size", format_bytes(est.rule_of_thumb_bytes), f"{100 * est.rule_of_thumb_bytes / est.total_bytes:.0f}%")
    console.print(table)
    ratio = est.total_bytes / max(1, est.rule_of_thumb_bytes)
    console.print(f"The estimate is {ratio:.1f}x the rule of thumb: {_why(est, format_bytes)}.")
    for note in est.notes:
        console.print(f"[dim]- {note}[/dim]")
    verdict = "[green]fits[/green]" if result.fits else "[red]does not fit[/red]"
    console.print(f"{verdict} in {format_bytes(result.budget_bytes)} ({result.budget_source}; {format_bytes(result.usable_bytes)} usable "
                  f"with {result.headroom:.0%} headroom).")
    if not result.fits:
        if not result.alternatives:
            console.print("No single change or pair of changes fits; use a smaller model or a larger device.")
            return
        alt = Table(title="Changes that fit, best first")
        alt.add_column("#", justify="right")
        alt.add_column("change")
        alt.add_column("estimated peak", justify="right")
        for i, a in enumerate(result.alternatives, 1):
            alt.add_row(str(i), a.change, format_bytes(a.estimate.total_bytes))
        console.print(alt)


def register(app: typer.Typer) -> None:
    """Add ``tunewise memory`` to ``app``."""
    app.command("memory")(handle_errors(memory))
