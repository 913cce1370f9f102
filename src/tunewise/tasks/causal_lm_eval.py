"""Scoring a causal LM on held-out examples: token loss on the answers, then generation.

The loss is summed over the answer tokens only (the same mask as training), so perplexity
says how likely the model finds the expected answers. Generation continues each held-out
prompt (left-padded batches; greedy unless ``llm.do_sample``) and the outputs are checked
with the pure metrics of :mod:`tunewise.evaluate.generation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tunewise.data.chat import IGNORE_INDEX, ChatExample, Encoded, Formatter
from tunewise.evaluate.generation import generation_metrics, perplexity, resolve_format_check
from tunewise.tasks.causal_lm_config import LLMConfig
from tunewise.tasks.progress import work_progress


@dataclass
class LMEvalResult:
    """Metrics of one model state, the seconds it took and examples to show."""

    metrics: dict[str, float]
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list, repr=False)
    # metric -> 1.0/0.0 per generated example (same examples, same order for every model state):
    # exact_match and format_valid are their means. The token-weighted loss has no per-example mean.
    items: dict[str, list[float]] = field(default_factory=dict, repr=False)


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def answer_loss(model: Any, encoded: list[Encoded], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the label tokens, and how many there were."""
    device = _device_of(model)
    nll, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):  # right padding: positions stay 0..n-1
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            labels[row, : len(e.labels)] = torch.tensor(e.labels)
            mask[row, : len(e.input_ids)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits  # (batch, seq, vocab)
        target = labels[:, 1:].to(device)  # token t is predicted at position t - 1
        keep = target != IGNORE_INDEX
        nll += float(F.cross_entropy(logits[:, :-1][keep].float(), target[keep], reduction="sum"))
        count += int(keep.sum())
    return nll, count


@torch.no_grad()
def generate(model: Any, formatter: Formatter, examples: list[ChatExample], llm: LLMConfig, context: int) -> list[str]:
    """Continue each example's prompt; returns the decoded new text (special tokens dropped)."""
    tok = formatter.tokenizer
    device = _device_of(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = formatter.end_of_turn_ids()
    outputs: list[str] = []
    with work_progress("generating", len(examples)) as advance:
        for start in range(0, len(examples), llm.eval_batch_size):
            outputs += _generate_batch(model, formatter, examples[start:start + llm.eval_batch_size], llm, context,
                                       device, pad_id, stops)
            advance(min(llm.eval_batch_size, len(examples) - start))
    return outputs


def _generate_batch(model: Any, formatter: Formatter, batch: list[ChatExample], llm: LLMConfig, context: int,
                    device: Any, pad_id: int | None, stops: list[int]) -> list[str]:
    tok = formatter.tokenizer
    outputs: list[str] = []
    prompts = [formatter.prompt_ids(ex) for ex in batch]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    new_tokens = max(1, min(llm.max_new_tokens, context - width))
    sampling = {"do_sample": True, "temperature": llm.temperature, "top_p": llm.top_p} if llm.do_sample else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    out = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
        eos_token_id=stops or None, pad_token_id=pad_id, **sampling,
    )
    for row in range(len(prompts)):
        outputs.append(tok.decode(out[row, width:], skip_special_tokens=True).strip())
    return outputs


def evaluate_lm(model: Any, formatter: Formatter, examples: list[ChatExample], encoded: list[Encoded],
                llm: LLMConfig, *, show: int, context: int) -> LMEvalResult:
    """Loss and perplexity on every held-out example; exact match and format validity on the
    generations of the first ``llm.max_eval_generations`` of them.

    Args:
        show: how many examples to return with their outputs (before/after display).
        context: the longest sequence the model takes (prompt + new tokens are kept within).
    """
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        tok = formatter.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        nll, count = answer_loss(model, encoded, pad_id, llm.eval_batch_size)
        mean, ppl = perplexity(nll, count)
        n_gen = len(examples) if llm.max_eval_generations is None else min(len(examples), llm.max_eval_generations)
        generated = examples[:n_gen]
        outputs = generate(model, formatter, generated, llm, context) if generated else []
    finally:
        model.train(was_training)
    check = resolve_format_check(llm.format_check)
    gen_metrics, correct, valid = generation_metrics(outputs, [ex.answer for ex in generated], check)
    # answer_likelihood: geometric-mean probability of an expected answer token (1 / perplexity).
    metrics = {**gen_metrics, "answer_likelihood": 1.0 / ppl, "eval_loss": mean, "perplexity": ppl}
    shown = []
    for ex, out, ok, fmt in list(zip(generated, outputs, correct, valid))[:show]:
        item = {"input": ex.prompt if ex.prompt is not None else _last_user(ex), "expected": ex.answer,
                "output": out, "correct": ok}
        if check is not None:
            item["format_valid"] = fmt
        shown.append(item)
    items = {"exact_match": [float(ok) for ok in correct]}
    if check is not None:
        items["format_valid"] = [float(fmt) for fmt in valid]
    return LMEvalResult(metrics, time.perf_counter() - start, shown, outputs, items if generated else {})


def _last_user(example: ChatExample) -> str:
    users = [m["content"] for m in example.messages[:-1] if m["role"] == "user"]
    return users[-1] if users else example.messages[0]["content"]
