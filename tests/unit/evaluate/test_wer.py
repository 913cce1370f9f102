"""WER/CER after Whisper's normalisers: hand-derived cases, jiwer as the reference, per-item scores."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from tunewise.evaluate.uncertainty import gain_intervals
from tunewise.evaluate.wer import error_rates, normalizer, normalizer_name, pair_counts


def test_hand_derived_counts():
    # "a b c" -> "a c": one deletion over 3 words; "x y" -> "x y z": one insertion over 2 words
    rates = error_rates(["a b c", "x y"], ["a c", "x y z"])
    assert rates.wer == pytest.approx(2 / 5)  # corpus-level: 2 edits / 5 reference words (not the mean of 1/3 and 1/2)
    assert [c.word_errors for c in rates.counts] == [1, 1]
    # characters: "a b c" -> "a c" deletes "b" and one space (2 of 5); "x y" -> "x y z" inserts " z" (2 over 3)
    assert rates.cer == pytest.approx(4 / 8)


def test_agrees_with_jiwer_on_a_corpus():
    refs = ["the permit for the roof", "skatteverket needs the form", "how long does it take"]
    hyps = ["the permit for a roof", "skate verket needs form", "how long does it take to"]
    rates = error_rates(refs, hyps)
    assert rates.wer == pytest.approx(jiwer.wer(refs, hyps))
    assert rates.cer == pytest.approx(jiwer.cer(refs, hyps))


def test_items_average_to_the_corpus_wer():
    refs = ["one two three four", "five", "six seven"]
    hyps = ["one two", "five six", ""]
    rates = error_rates(refs, hyps)
    assert np.mean(rates.items["wer"]) == pytest.approx(rates.wer)
    assert np.mean(rates.items["cer"]) == pytest.approx(rates.cer)
    assert rates.counts[2].word_errors == 2 and rates.counts[2].wer == 1.0  # empty transcript: every word deleted


def test_empty_reference_counts_insertions_and_all_empty_refuses():
    assert pair_counts("", "uh huh").word_errors == 2 and pair_counts("", "uh huh").words == 0
    rates = error_rates(["hello world", ""], ["hello world", "noise"])
    assert rates.wer == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="every reference is empty"):
        error_rates([""], ["x"])
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["a", "b"], ["a"])


def test_english_normaliser_ignores_case_punctuation_and_spelling_variants():
    norm = normalizer("en")
    assert normalizer_name("en") == "Whisper EnglishTextNormalizer"
    assert error_rates(["Hello, Mr. Smith!"], ["hello mister smith"], norm).wer == 0.0
    assert error_rates(["It's twenty-five dollars."], ["it is $25"], norm).wer == 0.0
    assert normalizer("en", {"colour": "color"})("Colour") == "color"


def test_basic_normaliser_keeps_swedish_letters():
    norm = normalizer("sv")
    assert normalizer_name("sv") == "Whisper BasicTextNormalizer"
    assert norm("Skatteverket, Göteborg!") == "skatteverket göteborg"
    assert error_rates(["Åre kommun"], ["are kommun"], norm).wer == 0.5  # å is a different letter, not an accent to drop


def test_items_feed_the_paired_bootstrap_lower_is_better():
    class Result:
        def __init__(self, rates):
            self.items, self.metrics = rates.items, rates.metrics

    refs = [f"word{i} alpha beta" for i in range(20)]
    before = error_rates(refs, [f"word{i} alfa beta" for i in range(20)])  # one substitution each
    after = error_rates(refs, list(refs))
    ci = gain_intervals(Result(before), Result(after), resamples=200)["wer"]
    assert ci["difference"] == pytest.approx(-1 / 3)  # WER fell from 1/3 to 0: a negative difference is the gain
    assert ci["relative"] == pytest.approx(-1.0) and ci["p_value"] < 0.01
