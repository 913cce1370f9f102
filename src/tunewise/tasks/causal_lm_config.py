"""The ``llm:`` config section: sequences, chat templates and generation of the causal-LM task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.config import register_section
from tunewise.errors import TunewiseError


@dataclass
class LLMConfig:
    """Causal language model fine-tuning (task: causal_lm): sequences, templates, generation."""

    max_length: int = field(default=512, metadata={"help": "Tokens per training sequence; longer ones are truncated (and counted)."})
    packing: bool = field(default=False, metadata={"help": "Pack several short sequences into one of max_length (TRL best-fit packing)."})
    chat_template: str | None = field(default=None, metadata={"help": "Fallback when the tokenizer has none: 'simple' or a Jinja template."})
    use_chat_template: str = field(default="auto", metadata={"help": "Prompt/completion data: auto (the model's chat template when it has one), "
        "always or never."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message added to prompt/completion examples (chat template only)."})
    format_check: Any = field(default="none", metadata={"help": "none, json, regex:<pattern>; in Python also a callable(text) -> bool."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation: new tokens per held-out prompt."})
    do_sample: bool = field(default=False, metadata={"help": "Generation: sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Generation: sampling temperature (do_sample only)."})
    top_p: float = field(default=1.0, metadata={"help": "Generation: nucleus sampling mass (do_sample only)."})
    max_eval_generations: int | None = field(default=None, metadata={"help": "Generate for at most this many held-out prompts (loss uses all)."})
    eval_batch_size: int = field(default=16, metadata={"help": "Held-out sequences per forward pass (loss and generation)."})

    def __post_init__(self) -> None:
        for name in ("max_length", "max_new_tokens", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise TunewiseError(f"llm.{name}: must be at least 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise TunewiseError(f"llm.max_length: must be at least 8 tokens, got {self.max_length}")
        if self.max_eval_generations is not None and self.max_eval_generations < 0:
            raise TunewiseError(f"llm.max_eval_generations: must be 0 or more, got {self.max_eval_generations}")
        if self.use_chat_template not in ("auto", "always", "never"):
            raise TunewiseError(f"llm.use_chat_template: unknown '{self.use_chat_template}'; use auto, always or never")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise TunewiseError("llm.temperature must be positive and llm.top_p in (0, 1]")
        from tunewise.evaluate.generation import check_format_spec

        self.format_check = check_format_spec(self.format_check)


register_section("llm", LLMConfig)
