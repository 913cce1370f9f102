"""WiSE-FT for speech recognition: blend pre-trained and fine-tuned Whisper weights, score each blend's WER
in-domain and on general speech.

theta(alpha) = (1 - alpha) theta_0 + alpha theta_1 (:func:`tunewise.strategies.interpolate.interpolate_state_dicts`).
Each blend transcribes the run's held-out clips (in-domain) and a general-speech set (forgetting).
WER is lower-is-better, so forgetting is the relative *rise* of the general WER over the
pre-trained model's (0.05 = 5 % more errors), and the rule picks the lowest in-domain WER among
blends that forget at most ``max_forgetting`` (:func:`~tunewise.strategies.interpolate.pick_alpha`
on the negated WER; ties to the smaller alpha).

The general-speech set is ``strategy.general_data`` (an audio,text table or folder), else the
LibriVox clips :func:`tunewise.data.speech_synth.general_speech_set` finds (real read speech from
Debian's pocketsphinx-testdata); without either the sweep is refused with how to get one.

References: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", arXiv:2109.01903.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

RULE = ("lowest in-domain wer among blends whose general-speech wer is at most {limit:.0%} above the pre-trained model's")


def general_clips(config: Any, path: str | None) -> tuple[list[Any], str]:
    """The general-speech clips and a description: ``path``, else the LibriVox set found on this machine.

    Raises:
        TunewiseError: none given and none found (the message says how to get LibriVox clips).
    """
    from tunewise.tasks.speech import read_clips

    if path:
        return read_clips(path, config, "strategy.general_data").clips, f"{path} (user file)"
    from tunewise.data.speech_synth import general_speech_set

    found, note = general_speech_set()
    if found is None:
        raise TunewiseError(f"strategy.general_data: no general-speech set to measure forgetting on ({note})")
    sc = config.speech
    from tunewise.data.audio import read_speech_data

    clips = read_speech_data(Path(found), on_bad_audio=sc.on_bad_audio, long_audio="skip").clips
    return clips, note.removeprefix("general speech: ")


def speech_sweep(task: Any, config: Any, data: Any, model_dir: Path, options: Any, console: Any = None) -> dict[str, Any]:
    """Score every blend of the run's pre-trained and saved fine-tuned Whisper (in-domain and general WER).

    Args:
        task: the speech task that prepared ``data`` (its processor and generation settings).
        model_dir: the run's saved (merged) model.
        options: the strategy's WiSE-FT options (``interpolate``, ``max_forgetting``, ``general_data``).

    Returns:
        ``{"metric", "rule", "max_forgetting", "general_before", "rows", "chosen", "general"}``, as
        :func:`tunewise.wiseft.sweep` returns (so :func:`tunewise.wiseft.markdown` renders it).
    """
    from tunewise.models.loading import load_whisper, pick_device
    from tunewise.strategies.interpolate import check_alphas, interpolate_state_dicts, pick_alpha
    from tunewise.tasks.speech import generation_kwargs, score_transcripts
    from tunewise.tasks.speech_batches import transcribe

    alphas = check_alphas(options.interpolate, option="strategy.interpolate")
    general, described = general_clips(config, options.general_data)
    device = pick_device(config.train.device)
    base = task.load_model(config, device)
    tuned, _ = load_whisper(str(model_dir))
    tuned = tuned.to(device)
    sc = config.speech
    gen = generation_kwargs(data, sc, int(base.config.max_target_positions))

    def wer(model: Any, clips: list[Any]) -> float:
        texts = transcribe(model, clips, data.processor, gen, sc.eval_batch_size, progress=False)
        return score_transcripts(clips, texts, sc.language, getattr(data.processor.tokenizer, "english_spelling_normalizer", None),
                                 0.0, 0).metrics["wer"]

    theta0 = {k: v.detach().clone() for k, v in base.state_dict().items()}
    theta1 = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    interpolate_state_dicts(theta0, theta1, 1.0)  # the architectures match before anything is scored
    general_before = wer(base, general)
    rows = []
    try:
        for alpha in alphas:
            tuned.load_state_dict(interpolate_state_dicts(theta0, theta1, alpha))
            ind, gen_wer = wer(tuned, data.eval), wer(tuned, general)
            forgetting = (gen_wer - general_before) / general_before if general_before else gen_wer
            rows.append({"alpha": alpha, "in_domain": round(ind, 6), "general": round(gen_wer, 6), "forgetting": round(forgetting, 6)})
            if console is not None:
                console.print(f"  alpha {alpha:.2f}: in-domain wer {ind:.4f}, general {gen_wer:.4f} (forgetting {forgetting:+.1%})")
    finally:
        tuned.load_state_dict(theta1)
    picked = pick_alpha([{**r, "in_domain": -r["in_domain"]} for r in rows], options.max_forgetting)
    chosen = next(r for r in rows if r["alpha"] == picked["alpha"])
    return {"metric": "wer", "rule": RULE.format(limit=options.max_forgetting), "max_forgetting": options.max_forgetting,
            "general_before": round(general_before, 6), "rows": rows, "chosen": chosen,
            "general": f"{described}: {len(general)} clips"}
