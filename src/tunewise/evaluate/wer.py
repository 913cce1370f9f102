"""Word and character error rates of transcripts, after a documented text normalisation.

Pure functions over (reference, hypothesis) strings; the edit distances come from jiwer.

* **Normalisation** (:func:`normalizer`): English uses Whisper's own ``EnglishTextNormalizer``
  (transformers; from the Whisper paper's evaluation: lower case, punctuation and filler words
  removed, numbers and currencies spelled as digits, contractions expanded, and British
  spellings mapped to American ones when the checkpoint's tokenizer ships that table); every
  other language uses Whisper's ``BasicTextNormalizer`` (lower case, bracketed text and
  punctuation removed, whitespace collapsed; letters such as å, ä, ö are kept). Both sides of
  every pair go through the same normaliser, so the error rates ignore case and punctuation.
* **WER** is corpus-level: all word edits (substitutions + deletions + insertions) over all
  reference words, as jiwer and the Whisper paper compute it, not a mean of per-clip rates.
  **CER** likewise over characters (spaces included).
* **Per-item scores** for the paired bootstrap (:mod:`tunewise.evaluate.uncertainty`): item
  ``i`` gets ``errors_i / mean reference words per clip``, so the mean of the items is exactly
  the corpus WER. A bootstrap resample keeps that denominator fixed (the full set's mean) where
  a ratio estimator would re-draw it; the relative gain is unaffected (the denominator cancels)
  and for the absolute gain the difference is the spread of the mean reference length, small
  for sets of similar sentences.

A reference that is empty after normalisation has no words: its hypothesis words all count
as insertions (jiwer refuses empty references, so these pairs are counted here).

References: Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"
(Whisper), appendix C (text normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Normalizer = Callable[[str], str]


def normalizer(language: str | None = "en", spelling: dict[str, str] | None = None) -> Normalizer:
    """The text normaliser applied to references and transcripts before scoring.

    Args:
        language: a Whisper language code; ``en`` or None (English-only checkpoints) selects the
            English normaliser, anything else the basic one.
        spelling: British -> American spellings (the Whisper tokenizer's ``normalizer.json``);
            None or empty: none are mapped.
    """
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    base = EnglishTextNormalizer(spelling or {}) if language in (None, "en") else BasicTextNormalizer()

    def normalize(text: str) -> str:
        return " ".join(base(text).split())  # the normalisers leave spaces where punctuation was

    return normalize


def normalizer_name(language: str | None = "en") -> str:
    """What :func:`normalizer` chose, for reports."""
    return "Whisper EnglishTextNormalizer" if language in (None, "en") else "Whisper BasicTextNormalizer"


@dataclass
class Counts:
    """Edit counts of one (reference, hypothesis) pair after normalisation."""

    word_errors: int
    words: int
    char_errors: int
    chars: int

    @property
    def wer(self) -> float | None:
        """This pair's own WER (None for an empty reference)."""
        return self.word_errors / self.words if self.words else None


def pair_counts(reference: str, hypothesis: str) -> Counts:
    """Word and character edits between two already-normalised strings."""
    import jiwer

    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return Counts(len(hyp_words), 0, len(hypothesis), 0)
    if not hyp_words:
        return Counts(len(ref_words), len(ref_words), len(reference), len(reference))
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return Counts(words.substitutions + words.deletions + words.insertions, len(ref_words),
                  chars.substitutions + chars.deletions + chars.insertions, len(reference))


@dataclass
class ErrorRates:
    """Corpus WER/CER of a set of transcripts and what the bootstrap and the examples need."""

    wer: float
    cer: float
    counts: list[Counts]
    references: list[str]  # normalised
    hypotheses: list[str]  # normalised
    items: dict[str, list[float]] = field(default_factory=dict)  # per-item scores whose mean is the metric

    @property
    def metrics(self) -> dict[str, float]:
        return {"wer": self.wer, "cer": self.cer}


def error_rates(references: Sequence[str], hypotheses: Sequence[str], normalize: Normalizer | None = None) -> ErrorRates:
    """Corpus WER and CER of ``hypotheses`` against ``references`` (same order).

    Args:
        references: the true transcripts.
        hypotheses: the model's transcripts.
        normalize: applied to both sides first (:func:`normalizer`); None: compared as given.

    Returns:
        :class:`ErrorRates`; ``items["wer"]`` / ``items["cer"]`` are the per-item scores (module docstring).

    Raises:
        ValueError: the lists differ in length, are empty, or every reference is empty.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} transcripts")
    if not references:
        raise ValueError("no transcripts to score")
    norm = normalize or (lambda text: text)
    refs = [" ".join(norm(r).split()) for r in references]  # whitespace collapsed whatever ``normalize`` does
    hyps = [" ".join(norm(h).split()) for h in hypotheses]
    counts = [pair_counts(r, h) for r, h in zip(refs, hyps)]
    words, chars = sum(c.words for c in counts), sum(c.chars for c in counts)
    if words == 0:
        raise ValueError("every reference is empty after normalisation: nothing to score")
    n = len(counts)
    mean_words, mean_chars = words / n, max(chars, 1) / n
    items = {"wer": [c.word_errors / mean_words for c in counts], "cer": [c.char_errors / mean_chars for c in counts]}
    return ErrorRates(sum(c.word_errors for c in counts) / words, sum(c.char_errors for c in counts) / max(chars, 1),
                      counts, refs, hyps, items)
