"""Speech strategies side by side on the demo: encoder frozen (partial) vs full vs LoRA.

Each strategy is one ``tunewise fit`` of the packaged Whisper tiny.en on the speech demo's clips
(Swedish terms in English sentences, held-out sentences never in training), in a fresh
subprocess so that each peak memory is its own. Reported: held-out WER and CER before and
after (with the paired bootstrap interval of the WER change), training seconds, peak memory
(the process's peak RSS) beside the memory planner's estimate, trainable parameters.

    python benchmarks/speech_strategies.py [--clips 120] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STRATEGIES = {
    "partial (encoder frozen)": ({"name": "partial", "frozen_layers": 0}, []),
    "full": ({"name": "full"}, []),
    # adapters start from zero and need a larger step (tunewise's adapter default, 1e-3)
    "lora r=8 (q,k,v,o,fc1,fc2)": ({"name": "lora", "rank": 8}, ["train.learning_rate=1e-3"]),
}

WORKER = r'''
import json, sys, tempfile
import tunewise
from rich.console import Console
from tunewise.demos import demo_config
cfg = demo_config(tempfile.mkdtemp() + "/run", name="speech", overrides=json.loads(sys.argv[1]))
cfg.strategy = json.loads(sys.argv[2])  # replaces the demo's own strategy and its options
m = tunewise.fit(cfg, console=Console(quiet=True)).metrics
u = m["uncertainty"].get("wer", {})
# the planner's estimate for this run (tunewise.memory.speech), with the CPU allocator the run chose
from tunewise.memory.allocator import with_cpu_allocator
from tunewise.memory.architecture import load_arch
from tunewise.memory.speech import estimate_speech
from tunewise.tasks.speech import SpeechRecognitionTask
task = SpeechRecognitionTask()
data = task.prepare_data(cfg)
est = estimate_speech(load_arch(data.source), strategy=cfg.strategy_name, batch_size=cfg.train.batch_size,
                      seq_len=max(len(x) for x in data.train_labels) - 1, lora_rank=int(cfg.strategy.get("rank", 8)),
                      cached_clips=len(data.train) if cfg.strategy_name == "partial" else 0)
est = with_cpu_allocator(est, m["memory"]["cpu_allocator"] if m["memory"]["cpu_allocator"] in ("trim", "default") else "default")
m["memory"]["estimated_mib"] = est.total_bytes / 2**20
print("RESULT " + json.dumps({"before": m["before"], "after": m["after"], "train_seconds": m["train"]["seconds"],
      "clips_per_s": m["train"]["samples_per_second"], "peak_mib": m["memory"]["peak_mib"],
      "estimate_mib": m["memory"].get("estimated_mib"), "trainable": m["strategy"]["trainable_params"],
      "total": m["strategy"]["total_params"], "wer_ci": [u.get("abs_low"), u.get("abs_high")], "p_value": u.get("p_value"),
      "eval_seconds": m["eval"]["seconds_after"], "examples": m["examples"]["after"][:2]}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--only", nargs="*", help="strategy labels to run (default: all)")
    args = parser.parse_args()
    rows = {}
    for label, (strategy, values) in STRATEGIES.items():
        if args.only and label not in args.only:
            continue
        overrides = [f"data.max_train={args.clips}", f"train.epochs={args.epochs}", "eval.examples=2", *values]
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(overrides), json.dumps(strategy)], capture_output=True,
                             text=True, check=False)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
        rows[label] = {**json.loads(lines[0][7:]), "wall_seconds": time.perf_counter() - start}
        r = rows[label]
        print(f"{label}: WER {r['before']['wer']:.3f} -> {r['after']['wer']:.3f}, {r['train_seconds']:.0f} s, "
              f"peak {r['peak_mib']:.0f} MiB", flush=True)
    result = {"settings": vars(args), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speech_strategies.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = ["# Speech strategies on the demo: encoder frozen vs full vs LoRA", "",
             f"Whisper tiny.en (packaged), {args.clips} training clips of the speech demo, {args.epochs:g} epochs, batch 8, "
             "held out: the demo's 50 clips of 25 sentences never in training. The estimate is tunewise.memory.speech's for the run's "
             "batch and longest transcript, with the frozen encoder's cached outputs (2.3 MB per clip) for partial. Measured "
             f"{result['when']} on 2 CPU cores shared with other jobs (contended: seconds are inflated and noisy; "
             "WER and memory are not affected).", "",
             "| strategy | trainable params | WER before | WER after | WER reduction (95% CI) | CER after | train s | peak MiB | estimate MiB |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for label, r in rows.items():
        ci = r["wer_ci"]
        ci_text = "n/a" if ci[0] is None else f"{r['before']['wer'] - r['after']['wer']:+.3f} ({ci[0]:+.3f} to {ci[1]:+.3f})"
        est = "n/a" if r.get("estimate_mib") is None else f"{r['estimate_mib']:.0f}"
        lines.append(f"| {label} | {r['trainable']:,} | {r['before']['wer']:.3f} | {r['after']['wer']:.3f} | {ci_text} | "
                     f"{r['after']['cer']:.3f} | {r['train_seconds']:.0f} | {r['peak_mib']:.0f} | {est} |")
    (RESULTS / "speech_strategies.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
