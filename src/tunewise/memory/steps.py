"""The estimator's models of a training step: what one example sends through the network, and
which head trains on top of it.

A task names the step model it trains with in its
:class:`~tunewise.tasks.base.MemoryProfile` (``spec.memory.step``); the estimator knows only
these step models, never a task's name.

| step | one example | head | architectures |
|---|---|---|---|
| ``contrastive`` | 2 texts by default (anchor + positive), mean-pooled | ``head`` strategy: a new Dense layer | encoder, decoder |
| ``classifier`` | 1 text | a new class head (``num_labels``) | encoder, decoder |
| ``lm`` | 1 sequence | the vocabulary: log-softmax over V (or TRL's fused tiles) | decoder |
| ``image`` | 1 image | a new head (``num_labels`` outputs; a search projection counts as one) | vit, cnn |
| ``image-text`` | 1 image and 1 caption, each through its tower | the towers' projections | clip |
| ``speech`` | 1 clip: log-mel frames (encoder), transcript tokens (decoder) | the vocabulary (tied projection) | audio-seq2seq |

``contrastive`` and ``image-text`` train against in-batch negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunewise.errors import TunewiseError, did_you_mean


@dataclass(frozen=True)
class StepModel:
    """How one training example of a step becomes memory.

    Args:
        name: what :class:`~tunewise.tasks.base.MemoryProfile` calls it.
        families: the architecture families (:data:`tunewise.memory.architecture.FAMILIES`) it applies to.
        inputs_per_example: inputs each tower encodes per example unless told otherwise.
        head: what trains on top of the network: ``dense`` (a new Dense layer, only under the
            ``head`` strategy), ``classes`` (a new class head, always), ``vocabulary`` (the
            decoder's LM head and its loss) or ``projections`` (the towers' own projections).
        pooling: ``mean`` (mean pooling over tokens keeps the expanded mask) or ``token`` (one
            pooled row per input, as CLIP takes its EOS and CLS tokens); empty: no pooling kept.
    """

    name: str
    families: tuple[str, ...]
    inputs_per_example: int
    head: str
    pooling: str


STEP_MODELS: dict[str, StepModel] = {
    step.name: step
    for step in (
        StepModel("contrastive", ("encoder", "decoder"), 2, "dense", "mean"),
        StepModel("classifier", ("encoder", "decoder"), 1, "classes", ""),
        StepModel("lm", ("decoder",), 1, "vocabulary", ""),
        StepModel("image", ("vit", "cnn"), 1, "classes", ""),
        StepModel("image-text", ("clip",), 1, "projections", "token"),
        # encoder-decoder speech models (Whisper): estimated by tunewise.memory.speech
        StepModel("speech", ("audio-seq2seq",), 1, "vocabulary", ""),
    )
}
STEPS = tuple(STEP_MODELS)
# What a family is, in the words of a one-line error.
FAMILY_KIND = {
    "encoder": "a text model", "decoder": "a text model", "vit": "an image model", "cnn": "an image model",
    "clip": "an image-text model", "audio-seq2seq": "a speech model",
}


def step_model(name: str) -> StepModel:
    """The step model called ``name``.

    Raises:
        TunewiseError: an unknown name (with the known ones).
    """
    if name not in STEP_MODELS:
        raise TunewiseError(f"step: unknown '{name}'{did_you_mean(name, STEPS)}; choose one of: {', '.join(STEPS)}")
    return STEP_MODELS[name]


def needs(step: StepModel) -> str:
    """What a step needs, for messages: "an image model (vit or cnn)"."""
    kinds = list(dict.fromkeys(FAMILY_KIND[f] for f in step.families))
    return f"{' or '.join(kinds)} ({' or '.join(step.families)})"


def own_estimator(step: StepModel) -> Callable[..., Any] | None:
    """The closed form of a step that the generic estimator does not count (``speech``: two stacks,
    cross-attention and a convolution stem; :func:`tunewise.memory.speech.estimate_speech`), else None.

    It takes the architecture and :func:`tunewise.memory.estimate.estimate`'s keyword arguments
    and returns a :class:`~tunewise.memory.estimate.MemoryEstimate`.
    """
    if step.name == "speech":
        from tunewise.memory.speech import estimate_speech  # at call time: it imports the generic estimator

        return estimate_speech
    return None


def check_family(step: StepModel, family: str, source: str, *, needed_by: str = "", fitting: tuple[str, ...] = ()) -> None:
    """Raise when a ``family`` model cannot train with ``step`` (an image step on a text model ...).

    Args:
        step: the step model; family, source: the model's family and name.
        needed_by: who needs the step, for the message (default: "the <step> step").
        fitting: what would train this model instead (task names), for the message.
    """
    if family in step.families and own_estimator(step) is not None:
        raise TunewiseError(f"step {step.name}: estimated by its own closed form ({own_estimator(step).__module__}), "
                            "not by the generic estimator")
    if family not in step.families:
        raise TunewiseError(f"model: {source or 'the model'} is {FAMILY_KIND[family]} ({family}); "
                            f"{needed_by or f'the {step.name} step'} needs {needs(step)}"
                            + (f"; tasks that fit it: {', '.join(fitting)}" if fitting else ""))
