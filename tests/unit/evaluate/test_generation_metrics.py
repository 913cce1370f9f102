"""Pure metrics on generated text: exact match, format checks, perplexity (hand-derived values)."""

from __future__ import annotations

import math

import pytest

from tunewise.errors import TunewiseError
from tunewise.evaluate.generation import (
    check_format_spec,
    cut_at_stop,
    exact_match,
    format_validity,
    generation_metrics,
    is_valid_json,
    load_check,
    normalize,
    perplexity,
    regex_check,
    resolve_format_check,
)


def test_exact_match_normalizes_whitespace():
    # 2 of 4 equal after collapsing whitespace: "a b" == " a\n b ", "x" == "x"; "y" != "Y", "" != "z".
    assert exact_match([" a\n b ", "x", "y", ""], ["a b", "x", "Y", "z"]) == 0.5
    assert exact_match([], []) == 0.0
    assert normalize("  {\"a\":  1}\n") == '{"a": 1}'
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_json_check():
    assert is_valid_json('{"answer": "yes", "category": 3}')
    assert is_valid_json("  [1, 2]\n")
    assert not is_valid_json('{"answer": "yes"')  # unterminated
    assert not is_valid_json("Sure! {\"a\": 1}")  # prose around the object is not the format
    assert not is_valid_json("")


def test_regex_check_matches_whole_output():
    check = regex_check(r"SELECT .+ FROM \w+;")
    assert check("SELECT a FROM t;")
    assert check("  SELECT a, b FROM t;\n")  # surrounding whitespace is stripped
    assert not check("Here: SELECT a FROM t;")  # fullmatch, not search
    with pytest.raises(TunewiseError, match="invalid regular expression"):
        regex_check("(")


def test_format_specs():
    assert check_format_spec("JSON") == "json"
    assert check_format_spec("none") == "none"
    assert check_format_spec("regex:^a+$") == "regex:^a+$"
    assert resolve_format_check("none") is None
    assert resolve_format_check("json") is is_valid_json
    assert resolve_format_check("regex:a+")("aaa")
    for bad, msg in (("xml", "unknown check"), ("regex:", "needs a pattern"), ("regex:[", "invalid regular"),
                     ("python:os.path:isfile", "only the Python API"), (3, "expected none")):
        with pytest.raises(TunewiseError, match=msg):
            check_format_spec(bad)


def upper_only(text: str) -> bool:
    return text.isupper()


def test_python_callable_check():
    name = check_format_spec(upper_only)
    assert name == f"python:{__name__}.upper_only"
    assert resolve_format_check(name)("ABC") and not resolve_format_check(name)("abc")
    assert load_check(f"{__name__}:upper_only") is upper_only
    with pytest.raises(TunewiseError, match="no attribute"):
        load_check(f"{__name__}:missing")
    with pytest.raises(TunewiseError, match="package.module:function"):
        load_check("no_colon")


def test_format_validity_treats_a_raising_check_as_invalid():
    def strict(text: str) -> bool:
        if not text:
            raise ValueError("empty")
        return True

    assert format_validity(["a", ""], strict) == [True, False]


def test_generation_metrics():
    metrics, correct, valid = generation_metrics(['{"a": 1}', "{oops", '{"a": 2}'], ['{"a": 1}', '{"a": 1}', '{"a": 1}'],
                                                 is_valid_json)
    assert correct == [True, False, False]
    assert valid == [True, False, True]
    assert metrics == {"exact_match": pytest.approx(1 / 3), "format_valid": pytest.approx(2 / 3)}
    metrics, _, valid = generation_metrics(["a"], ["a"], None)
    assert metrics == {"exact_match": 1.0} and valid == [True]


def test_perplexity():
    # 4 tokens each with p = 1/2: NLL = 4 ln 2, mean ln 2, perplexity exactly 2.
    mean, ppl = perplexity(4 * math.log(2), 4)
    assert mean == pytest.approx(math.log(2)) and ppl == pytest.approx(2.0)
    # uniform over a vocabulary of 10 -> perplexity 10
    assert perplexity(3 * math.log(10), 3)[1] == pytest.approx(10.0)
    assert perplexity(1e6, 1)[1] == pytest.approx(math.exp(50))  # capped, stays printable
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_cut_at_stop():
    assert cut_at_stop("answer<|im_end|>junk", ["<|im_end|>"]) == "answer"
    assert cut_at_stop("a###b###", ["###", ""]) == "a"
    assert cut_at_stop("plain", ["<eos>"]) == "plain"
