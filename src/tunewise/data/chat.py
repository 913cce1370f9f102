"""Supervised fine-tuning data for causal LMs: parsing, chat templates and the loss mask.

Two record shapes are read (from any file :mod:`tunewise.data.readers` reads):

* **prompt/completion**: ``{"prompt": ..., "completion": ...}``;
* **chat**: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``
  (a JSON string in a CSV cell works too).

Each example becomes token ids and labels where only the completion (or every assistant
turn, with its end-of-turn marker) counts in the loss; the prompt is masked with -100. The
mask is built by rendering the conversation in segments, so it needs no special markers in
the chat template: the text up to each assistant turn (rendered with the generation prompt)
is masked, the turn itself is trained. Prompts at evaluation are tokenized the same way, so
what the model sees when generating equals what preceded the completion in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunewise.data.readers import Record, require_columns
from tunewise.errors import TunewiseError

ROLES = ("system", "user", "assistant", "tool")
IGNORE_INDEX = -100  # labels the loss skips (PyTorch's cross_entropy default)

# A plain template offered when a tokenizer has none. Assistant turns end with the EOS token
# so that generation stops there.
SIMPLE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% else %}### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
FALLBACK_TEMPLATES = {"simple": SIMPLE_TEMPLATE}


@dataclass
class ChatExample:
    """One training or evaluation example: a conversation that ends with the answer.

    ``prompt``/``completion`` are kept for prompt/completion records, which are used as raw
    text when no chat template applies.
    """

    messages: list[dict[str, str]]
    prompt: str | None = None
    completion: str | None = None

    @property
    def answer(self) -> str:
        """The text the model should produce: the final assistant turn."""
        return self.completion if self.completion is not None else self.messages[-1]["content"]


@dataclass
class Encoded:
    """Token ids with their labels (-100 where the loss is masked)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


# --------------------------------------------------------------------------------------
# parsing


def detect_kind(records: list[Record], kind: str, columns: dict[str, str], path: str) -> str:
    """``chat`` or ``prompt_completion``: as configured, or from the columns present.

    Args:
        kind: data.kind; ``chat``, ``prompt_completion``, or anything else for auto-detection
            (the foundation's default ``pairs`` included).
    """
    if kind in ("chat", "prompt_completion"):
        return kind
    available = set(records[0]) if records else set()
    if columns.get("messages", "messages") in available:
        return "chat"
    if {columns.get("prompt", "prompt"), columns.get("completion", "completion")} <= available:
        return "prompt_completion"
    raise TunewiseError(
        f"{path}: causal_lm data needs a 'messages' column (chat) or 'prompt' and 'completion' columns; "
        f"columns are: {', '.join(map(str, available))}. Map yours with data.columns, e.g. {{prompt: question, completion: answer}}"
    )


def parse_examples(records: list[Record], path: str, kind: str, columns: dict[str, str]) -> list[ChatExample]:
    """Validate records and turn them into :class:`ChatExample` objects.

    Raises:
        TunewiseError: a missing column, a malformed chat record (missing role or content,
            unknown role, no final assistant turn), or an empty completion; the row is named.
    """
    if kind == "chat":
        col = columns.get("messages", "messages")
        require_columns(records, {"messages": col}, path)
        return [ChatExample(messages=parse_messages(r.get(col), row, path)) for row, r in enumerate(records)]
    pcol, ccol = columns.get("prompt", "prompt"), columns.get("completion", "completion")
    require_columns(records, {"prompt": pcol, "completion": ccol}, path)
    examples = []
    for row, record in enumerate(records):
        prompt = _text(record.get(pcol), row, path, pcol)
        completion = _text(record.get(ccol), row, path, ccol)
        if not prompt.strip():
            raise TunewiseError(f"{path}: row {row + 1} has an empty prompt ('{pcol}'); fill it or remove the row")
        if not completion.strip():
            raise TunewiseError(f"{path}: row {row + 1} has an empty completion ('{ccol}'); there is nothing to learn from it")
        examples.append(ChatExample(
            messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            prompt=prompt, completion=completion,
        ))
    return examples


def _text(value: Any, row: int, path: str, column: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (list, dict, bool)):
        raise TunewiseError(f"{path}: row {row + 1}, column '{column}' holds a {type(value).__name__}, expected text")
    return str(value)


def parse_messages(value: Any, row: int, path: str) -> list[dict[str, str]]:
    """Check one chat record: a non-empty list of {role, content}, ending with the assistant."""
    where = f"{path}: row {row + 1}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TunewiseError(f"{where}: 'messages' is text that is not a JSON list of {{role, content}} objects") from None
    if not isinstance(value, list) or not value:
        raise TunewiseError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    messages = []
    for i, msg in enumerate(value):
        at = f"{where}, message {i + 1}"
        if not isinstance(msg, dict):
            raise TunewiseError(f"{at}: expected an object with role and content, got {type(msg).__name__}")
        if "role" not in msg or msg["role"] in (None, ""):
            raise TunewiseError(f"{at}: missing 'role' (one of {', '.join(ROLES)})")
        if "content" not in msg or msg["content"] is None:
            raise TunewiseError(f"{at}: missing 'content'")
        role, content = str(msg["role"]).strip().lower(), msg["content"]
        if role not in ROLES:
            raise TunewiseError(f"{at}: unknown role '{msg['role']}'; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TunewiseError(f"{at}: 'content' must be text, got {type(content).__name__}")
        if role == "assistant" and not content.strip():
            raise TunewiseError(f"{at}: empty assistant content; there is nothing to learn from it")
        messages.append({"role": role, "content": content})
    if messages[0]["role"] == "assistant":
        raise TunewiseError(f"{where}: the conversation starts with an assistant message; start with system or user")
    if messages[-1]["role"] != "assistant":
        raise TunewiseError(f"{where}: the conversation must end with an assistant message (the completion to learn)")
    return messages


# --------------------------------------------------------------------------------------
# templates and encoding


def tokenizer_template(tokenizer: Any) -> str | None:
    """The tokenizer's own chat template, if it has one."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


def choose_template(tokenizer: Any, kind: str, use_chat_template: str, fallback: str | None, model_name: str) -> tuple[str | None, str]:
    """The chat template to use (None: raw prompt + completion text) and its description.

    Raises:
        TunewiseError: chat data (or ``use_chat_template: always``) with no template and no
            fallback; the message offers ``llm.chat_template: simple``.
    """
    own = tokenizer_template(tokenizer)
    if kind == "prompt_completion" and use_chat_template == "never":
        return None, "none (raw prompt + completion)"
    if own:
        return own, "the model's chat template"
    if fallback:
        if fallback in FALLBACK_TEMPLATES:
            return FALLBACK_TEMPLATES[fallback], f"fallback '{fallback}'"
        if "{{" not in fallback and "{%" not in fallback:
            raise TunewiseError(
                f"llm.chat_template: unknown template '{fallback}'; use {', '.join(FALLBACK_TEMPLATES)} or a Jinja template"
            )
        return fallback, "custom (llm.chat_template)"
    if kind == "prompt_completion" and use_chat_template == "auto":
        return None, "none (raw prompt + completion)"
    what = "chat data was given" if kind == "chat" else "llm.use_chat_template is 'always'"
    raise TunewiseError(
        f"model: {model_name} has no chat template and {what}; set llm.chat_template: simple "
        "(a plain '### User:/### Assistant:' template ending turns with the EOS token) or give a Jinja template"
    )


@dataclass
class Formatter:
    """Renders and tokenizes examples for one tokenizer and template.

    Args:
        tokenizer: a transformers tokenizer.
        template: a Jinja chat template, or None for raw prompt + completion text.
        system_prompt: a system message put before prompt/completion examples (template only).
    """

    tokenizer: Any
    template: str | None
    system_prompt: str | None = None
    _bos: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if self.template is None and bos is not None:
            # Raw text: start with BOS only where the tokenizer itself would add it (Llama yes, GPT-2 no).
            probe = self.tokenizer("a")["input_ids"]
            self._bos = [bos] if probe and probe[0] == bos else []

    # ---- rendering
    def messages(self, example: ChatExample) -> list[dict[str, str]]:
        if self.system_prompt and example.prompt is not None:
            return [{"role": "system", "content": self.system_prompt}, *example.messages]
        return example.messages

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=generation_prompt
        )

    def segments(self, example: ChatExample) -> list[tuple[str, bool]]:
        """The example as ``(text, trained)`` pieces in order; assistant turns are trained.

        Raises:
            TunewiseError: the template renders a conversation differently from its prefixes,
                so the assistant turns cannot be located.
        """
        if self.template is None:
            return [(example.prompt or "", False), (example.completion or "", True)]
        messages = self.messages(example)
        full = self._render(messages, False)
        pieces: list[tuple[str, bool]] = []
        pos = 0
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            before = self._render(messages[:i], True)  # ends with the generation prompt
            through = self._render(messages[: i + 1], False)
            start, end = len(before), len(through)
            if not (full.startswith(before) and full.startswith(through) and pos <= start <= end):
                raise TunewiseError(
                    "llm.chat_template: the chat template does not render a conversation's beginning as a prefix of "
                    "the whole, so the assistant tokens cannot be masked; set llm.chat_template or use prompt/completion data"
                )
            pieces += [(full[pos:start], False), (full[start:end], True)]
            pos = end
        pieces.append((full[pos:], False))
        return [(text, trained) for text, trained in pieces if text]

    def prompt_text(self, example: ChatExample) -> str:
        """What precedes the answer: the text a model continues at evaluation."""
        if self.template is None:
            return example.prompt or ""
        return self._render(self.messages(example)[:-1], True)

    # ---- tokens
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, example: ChatExample) -> list[int]:
        return self._bos + self._ids(self.prompt_text(example))

    def encode(self, example: ChatExample, max_length: int, row: int | None = None) -> Encoded:
        """Token ids and labels, truncated to ``max_length`` (the tail is cut).

        Raises:
            TunewiseError: the text before the first trained token fills ``max_length``
                (a prompt longer than the context): nothing of the answer would remain.
        """
        ids, labels = list(self._bos), [IGNORE_INDEX] * len(self._bos)
        for text, trained in self.segments(example):
            piece = self._ids(text)
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
        if self.template is None and getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.append(self.tokenizer.eos_token_id)  # raw text: learn to stop
            labels.append(self.tokenizer.eos_token_id)
        first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        if first >= max_length:
            where = f"row {row + 1}: " if row is not None else ""
            raise TunewiseError(
                f"data: {where}the prompt is {first} tokens, longer than the context of {max_length} "
                "(llm.max_length, capped by the model's positions); shorten it or raise llm.max_length"
            )
        truncated = len(ids) > max_length
        return Encoded(ids[:max_length], labels[:max_length], truncated)

    def end_of_turn_ids(self) -> list[int]:
        """Special tokens that end an assistant turn in this template (generation stops there)."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        stops = [eos] if eos is not None else []
        if self.template is None:
            return stops
        probe = ChatExample(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
        trained = "".join(text for text, is_trained in self.segments(probe) if is_trained)
        tail = trained[trained.find("y") + 1:] if "y" in trained else ""
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        special |= {i for i, tok in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if getattr(tok, "special", False)}
        tail_ids = self._ids(tail) if tail.strip() else []
        if tail_ids and tail_ids[0] in special and tail_ids[0] not in stops:
            stops.append(tail_ids[0])
        return stops
