"""Prompt/completion and chat parsing, chat templates, and the loss mask (a tiny tokenizer built here)."""

from __future__ import annotations

import pytest

from tunewise.data.chat import (
    IGNORE_INDEX,
    SIMPLE_TEMPLATE,
    ChatExample,
    Formatter,
    choose_template,
    detect_kind,
    parse_examples,
    parse_messages,
)
from tunewise.errors import TunewiseError

from tiny_models import CHATML, tiny_tokenizer  # noqa: E402 - shared tiny tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def trained_text(tok, enc) -> str:
    return tok.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX])


# ---- parsing


def test_detect_kind():
    assert detect_kind([{"messages": []}], "pairs", {}, "f") == "chat"
    assert detect_kind([{"prompt": "a", "completion": "b"}], "pairs", {}, "f") == "prompt_completion"
    assert detect_kind([{"q": "a", "a": "b"}], "auto", {"prompt": "q", "completion": "a"}, "f") == "prompt_completion"
    with pytest.raises(TunewiseError, match="needs a 'messages' column"):
        detect_kind([{"question": "a"}], "pairs", {}, "f")


def test_parse_prompt_completion_and_errors():
    [ex] = parse_examples([{"prompt": "2+2?", "completion": "4"}], "f.jsonl", "prompt_completion", {})
    assert ex.messages[-1] == {"role": "assistant", "content": "4"} and ex.answer == "4"
    with pytest.raises(TunewiseError, match=r"f.jsonl: row 2 has an empty completion"):
        parse_examples([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "  "}], "f.jsonl",
                       "prompt_completion", {})
    with pytest.raises(TunewiseError, match="no column 'completion'"):
        parse_examples([{"prompt": "a", "answer": "b"}], "f.jsonl", "prompt_completion", {})


@pytest.mark.parametrize("messages, message", [
    ([{"content": "hi"}, {"role": "assistant", "content": "x"}], "message 1: missing 'role'"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "message 1: missing 'content'"),
    ([{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}], "unknown role 'wizard'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], "empty assistant content"),
    ([{"role": "user", "content": "hi"}], "must end with an assistant message"),
    ([{"role": "assistant", "content": "hi"}], "starts with an assistant message"),
    ([], "non-empty list"),
    ("not json", "not a JSON list"),
    ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}], "'content' must be text"),
])
def test_malformed_chat_records(messages, message):
    with pytest.raises(TunewiseError, match=message) as info:
        parse_messages(messages, 4, "chat.jsonl")
    assert str(info.value).startswith("chat.jsonl: row 5")
    assert "\n" not in str(info.value)


def test_chat_record_from_csv_json_string():
    msgs = parse_messages('[{"role": "User", "content": "hi"}, {"role": "assistant", "content": "yo"}]', 0, "f.csv")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


# ---- templates


def test_no_chat_template_with_chat_data_offers_a_fallback():
    bare = tiny_tokenizer(None)
    with pytest.raises(TunewiseError, match="has no chat template and chat data was given; set llm.chat_template: simple"):
        choose_template(bare, "chat", "auto", None, "tiny-gpt")
    template, name = choose_template(bare, "chat", "auto", "simple", "tiny-gpt")
    assert template == SIMPLE_TEMPLATE and "simple" in name
    assert choose_template(bare, "prompt_completion", "auto", None, "m") == (None, "none (raw prompt + completion)")
    with pytest.raises(TunewiseError, match="unknown template 'fancy'"):
        choose_template(bare, "chat", "auto", "fancy", "m")
    tok = tiny_tokenizer()
    assert choose_template(tok, "prompt_completion", "auto", None, "m")[0] == CHATML
    assert choose_template(tok, "prompt_completion", "never", None, "m")[0] is None


# ---- the loss mask


def test_mask_covers_the_completion_only_with_a_chat_template(tok):
    fmt = Formatter(tok, CHATML)
    ex = ChatExample([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "hi", "ok")
    enc = fmt.encode(ex, 100)
    text = tok.decode(enc.input_ids)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    # Trained: the answer, its end-of-turn marker and the newline the template writes after it.
    assert trained_text(tok, enc) == "ok<|im_end|>\n"
    n_prompt = len(tok(fmt.prompt_text(ex), add_special_tokens=False)["input_ids"])
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert enc.loss_tokens == len("ok") + 1 + 1
    # Generation sees exactly the masked prefix.
    assert fmt.prompt_ids(ex) == enc.input_ids[:n_prompt]


def test_mask_multi_turn_trains_every_assistant_turn(tok):
    fmt = Formatter(tok, CHATML)
    ex = ChatExample([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "B"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "D"},
    ])
    enc = fmt.encode(ex, 200)
    assert trained_text(tok, enc) == "B<|im_end|>\nD<|im_end|>\n"
    assert "be brief" not in trained_text(tok, enc)


def test_mask_raw_prompt_completion_appends_eos(tok):
    fmt = Formatter(tok, None)
    ex = ChatExample([{"role": "user", "content": "Q: x\nA:"}, {"role": "assistant", "content": " y"}], "Q: x\nA:", " y")
    enc = fmt.encode(ex, 100)
    assert tok.decode(enc.input_ids) == "Q: x\nA: y</s>"
    assert trained_text(tok, enc) == " y</s>"
    assert fmt.prompt_text(ex) == "Q: x\nA:"


def test_system_prompt_is_added_and_masked(tok):
    fmt = Formatter(tok, CHATML, system_prompt="Answer in JSON.")
    ex = ChatExample([{"role": "user", "content": "q"}, {"role": "assistant", "content": "{}"}], "q", "{}")
    enc = fmt.encode(ex, 200)
    assert tok.decode(enc.input_ids).startswith("<|im_start|>system\nAnswer in JSON.<|im_end|>")
    assert trained_text(tok, enc) == "{}<|im_end|>\n"


def test_truncation_and_prompt_longer_than_context(tok):
    fmt = Formatter(tok, None)
    ex = ChatExample([{"role": "user", "content": "abcd"}, {"role": "assistant", "content": "efghij"}], "abcd", "efghij")
    enc = fmt.encode(ex, 6)
    assert enc.truncated and len(enc.input_ids) == 6 and trained_text(tok, enc) == "ef"
    assert not fmt.encode(ex, 11).truncated  # 4 + 6 + eos
    with pytest.raises(TunewiseError, match="row 3: the prompt is 4 tokens, longer than the context of 4"):
        fmt.encode(ex, 4, row=2)


def test_end_of_turn_tokens(tok):
    assert Formatter(tok, CHATML).end_of_turn_ids() == [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    assert Formatter(tok, None).end_of_turn_ids() == [tok.eos_token_id]
    # The fallback template ends turns with EOS itself: nothing to add.
    assert Formatter(tok, SIMPLE_TEMPLATE).end_of_turn_ids() == [tok.eos_token_id]


def test_simple_template_mask(tok):
    fmt = Formatter(tok, SIMPLE_TEMPLATE)
    ex = ChatExample([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "hi", "ok")
    enc = fmt.encode(ex, 100)
    assert tok.decode(enc.input_ids) == "### User:\nhi\n\n### Assistant:\nok</s>\n\n"
    assert trained_text(tok, enc) == "ok</s>\n\n"
