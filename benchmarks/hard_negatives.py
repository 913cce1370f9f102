"""Do mined hard negatives (``data.hard_negatives``) help the demo? Measured, side by side.

The FAQ search demo (packaged MiniLM, Swedish, default ``full`` strategy, all 400 training
pairs, ``demo_config``), trained from the same pre-trained model per condition (``CONDITIONS``):

* ``in-batch-*``: MultipleNegativesRankingLoss with in-batch negatives only (today's default),
  at 1, 1.5 and 2 epochs (a mined step encodes 3 texts per pair instead of 2, so in-batch at
  about 1.5 epochs costs what mined at 1 epoch costs: the equal-time comparison);
* ``mined-1-1ep`` / ``mined-3-1ep``: ``data.hard_negatives.mine=true``, 1 or 3 negatives per
  pair (relative margin 0.05, top sampling: the defaults), mined by the pre-trained model.

Gains over ``in-batch-1ep`` come with the paired bootstrap interval over the held-out queries
(:func:`tunewise.evaluate.uncertainty.gain_intervals`). After a mined run the mining step runs
again on a fresh copy of the pre-trained model: the cache answers.

    python benchmarks/hard_negatives.py mined-1-1ep   # one condition -> benchmarks/results/hard_negatives_<name>.json
    python benchmarks/hard_negatives.py report        # all measured -> benchmarks/results/hard_negatives.md/.json

Conditions run as separate processes (side by side on a loaded machine, so their seconds compare).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MINE = ["data.hard_negatives.mine=true"]
CONDITIONS = {  # name -> (epochs, overrides); each runs in its own process and writes its own file
    "in-batch-1ep": (1.0, []),
    "mined-1-1ep": (1.0, [*MINE, "data.hard_negatives.per_pair=1"]),
    "in-batch-1.5ep": (1.5, []),  # about mined-1's training time: a mined step encodes 3 texts per pair, not 2
    "in-batch-2ep": (2.0, []),
    "mined-3-1ep": (1.0, [*MINE, "data.hard_negatives.per_pair=3"]),
}
REFERENCE = "in-batch-1ep"
# At the demo's budget (400 pairs, its 3 epochs): the default against the levers with a wider mining window and a
# looser guard (the defaults left 252 of 400 pairs without a mined candidate), at equal epochs and at about equal
# training time (a mined step encodes 3 texts per pair instead of 2; an augmented copy doubles the examples).
WIDE = [*MINE, "data.hard_negatives.range_max=100", "data.hard_negatives.relative_margin=0.02"]
AUGMENT = ["data.augment.copies=1"]
DEMO_CONDITIONS = {
    "demo-in-batch-3ep": (3.0, []),
    "demo-mined-wide-1.6ep": (1.6, WIDE),  # ~1.85x the tokens per pair (a third, answer-long text)
    "demo-mined-wide-3ep": (3.0, WIDE),
    "demo-augment-1.5ep": (1.5, AUGMENT),
    "demo-augment-3ep": (3.0, AUGMENT),
}
DEMO_REFERENCE = "demo-in-batch-3ep"
CONDITIONS.update(DEMO_CONDITIONS)


def _file(name: str) -> Path:
    return RESULTS / f"hard_negatives_{name}.json"


def run(name: str) -> None:
    os.environ["TUNEWISE_CACHE"] = tempfile.mkdtemp(prefix="tunewise-hn-bench-")  # the first mining is a miss
    from tunewise.data.hard_negatives import add_hard_negatives
    from tunewise.demos import demo_config
    from tunewise.run import check_config, quiet_libraries, train_with_strategy
    from tunewise.strategies.base import eval_model

    quiet_libraries()
    epochs, overrides = CONDITIONS[name]
    cfg = demo_config("/tmp/unused", overrides=[*overrides, f"train.epochs={epochs}"])
    task, strategy, options = check_config(cfg)
    data = task.prepare_data(cfg)
    model = strategy.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stats, _ = train_with_strategy(strategy, options, task, model, data, cfg, workdir=Path(tmp))
        wall = time.perf_counter() - start
    result = task.evaluate(eval_model(strategy, model, task, options, cfg), data, cfg)
    levers = stats.details.get("levers", {})
    record = {"condition": name, "epochs": epochs, "metrics": result.metrics,
              "items": {k: [float(x) for x in v] for k, v in result.items.items()},
              "train_examples": stats.examples, "steps": stats.steps, "train_seconds": round(stats.seconds, 1),
              "wall_seconds": round(wall, 1), "levers": levers, "load": round(os.getloadavg()[0], 1)}
    if "hard_negatives_mined" in levers:  # mining again, as the next budget point or run would: the cache answers
        fresh = task.load_model(cfg, "cpu")
        report: dict = {}
        start = time.perf_counter()
        add_hard_negatives(list(data.train), data, cfg, fresh, report)
        record["cache"] = {"wall_seconds": round(time.perf_counter() - start, 3), **report}
    RESULTS.mkdir(exist_ok=True)
    _file(name).write_text(json.dumps(record))
    print(f"{name}: {cfg.eval.primary}={result.metrics[cfg.eval.primary]:.4f} steps={stats.steps} "
          f"train={stats.seconds:.0f}s wall={wall:.0f}s {levers}", file=sys.stderr, flush=True)


class _Result:
    def __init__(self, record: dict) -> None:
        self.metrics = record["metrics"]
        self.items = record["items"]


def report() -> None:
    from tunewise.evaluate.uncertainty import gain_intervals

    by = {name: json.loads(_file(name).read_text()) for name in CONDITIONS if _file(name).exists()}
    primary = "mrr@20"
    lines = ["# Mined hard negatives (`data.hard_negatives`) on the FAQ search demo", "",
             "Packaged all-MiniLM-L6-v2, Swedish FAQ, 400 training pairs, 103 held-out questions searched against all 503 "
             "answers, default `full` strategy, MNRL, batch 16, seed 42, `demo_config`; negatives mined by the pre-trained "
             "model with the defaults (relative margin 0.05, top sampling) from the 400 training answers (the 103 "
             "evaluation-only answers never enter the corpus). Gain = condition - in-batch at 1 epoch, 95% paired bootstrap interval over "
             "the held-out queries (2,000 resamples) and the paired permutation p-value (only the primary metric's "
             "per-query items are kept). The demo's own 3 epochs did not fit the time on this loaded machine.", "",
             f"| condition | epochs | steps | train s | mining s | {primary} | recall@1 | gain in {primary} vs {REFERENCE} [95% CI] | p |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    summary = {}
    demo_lines = [f"| condition | epochs | steps | train s | mining s | {primary} | recall@1 | gain in {primary} vs "
                  f"{DEMO_REFERENCE} [95% CI] | p |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name in CONDITIONS:
        reference, table = (DEMO_REFERENCE, demo_lines) if name in DEMO_CONDITIONS else (REFERENCE, lines)
        ref = by.get(reference)
        r = by.get(name)
        if r is None:
            table.append(f"| {name} | not measured (time) | | | | | | | |")
            continue
        gain = p = ""
        if name != reference and ref is not None:
            iv = gain_intervals(_Result(ref), _Result(r)).get(primary)
            if iv:
                gain = f"{iv['difference']:+.4f} [{iv['abs_low']:+.4f}, {iv['abs_high']:+.4f}]"
                p = f"{iv['p_value']:.3f}"
                summary[name] = {k: iv[k] for k in ("difference", "abs_low", "abs_high", "p_value")}
        mining = r["levers"].get("hard_negatives_seconds")
        table.append(f"| {name} | {r['epochs']:g} | {r['steps']} | {r['train_seconds']:.0f} | "
                     f"{'' if mining is None else f'{mining:.1f}'} | {r['metrics'][primary]:.4f} | "
                     f"{r['metrics'].get('recall@1', float('nan')):.4f} | {gain} | {p} |")
    lines.append("")
    if any(name in by for name in DEMO_CONDITIONS):
        lines += ["## At the demo's budget (400 pairs, 3 epochs)", "",
                  "The same setup at the demo's own epochs; `mined-wide`: range_max 100 and relative margin 0.02 (the "
                  "defaults' window left most pairs without a mined candidate); `augment`: one augmented copy of every "
                  "query (nlpaug delete/swap, p 0.1). The 1.6-epoch mined and 1.5-epoch augment rows cost about the "
                  "reference's training time.", "", *demo_lines, ""]
    for name, r in by.items():
        cache, lev = r.get("cache"), r["levers"]
        if not cache:
            continue
        lines += [f"{name}: mining {lev['hard_negatives_mined']} negatives took {lev['hard_negatives_seconds']:.1f} s "
                  f"(corpus {lev['hard_negatives_corpus']} answers, {lev['hard_negatives_eval_documents_excluded']} evaluation-only "
                  f"ones excluded; the guard dropped {lev['hard_negatives_guard_dropped']} candidates; "
                  f"{lev['hard_negatives_short_pairs']} pairs filled at random). Mining again with a fresh copy of the "
                  f"pre-trained model (the next budget point or run): {cache['wall_seconds']:.2f} s of wall time, "
                  f"`hard_negatives_cached: {str(cache['hard_negatives_cached']).lower()}`, reporting the "
                  f"{cache['hard_negatives_seconds']:.1f} s the first mining cost.", ""]
    lines += ["Reading: with the default guard (relative margin 0.05) and sentence-transformers' default window "
              "(range_max = 10 x per_pair + positives), the weak pre-trained model on Swedish ranks many answers within 5% of "
              "the positive, so most candidates in the window were dropped and most pairs were filled with random training "
              "answers: mined negatives did not help here (the gain's interval holds 0). Not made the default. Worth "
              "measuring next: a wider window (range_max 50-100) or a smaller margin, 3 epochs, per_pair 3.", ""]
    if any(name in by for name in DEMO_CONDITIONS):
        lines += ["Reading, at the demo's budget: the wider window (range_max 100, relative margin 0.02) mined a negative for "
                  "284 of 400 pairs (116 short, against 252 with the old defaults). At the reference's training time "
                  "(1.6 epochs) mined negatives gained +1.4 points of MRR@20, an interval that still holds 0; at the demo's "
                  "3 epochs (about 1.9x the training time) +2.4 points, interval +0.2 to +5.5 (permutation p = 0.08). "
                  "Augmenting the queries gained nothing at either length. So no lever beats the default at equal "
                  "training time by more than the evaluation's interval on this data (one seed; 103 held-out questions): "
                  "mining stays off by default, and its window defaults are now the measured ones (range_max 100, "
                  "relative margin 0.02); with time to spare, mining + 3 epochs is the best use of it measured here.", ""]
    loads = ", ".join(f"{name} {r['load']}" for name, r in by.items())
    lines += ["Machine: 2 shared CPU cores, heavily oversubscribed (the runs ran side by side with many other processes; "
              f"1-minute load average at the end of each run: {loads}): absolute seconds are inflated and noisy; compare "
              "steps, and seconds only roughly.", ""]
    (RESULTS / "hard_negatives.md").write_text("\n".join(lines))
    (RESULTS / "hard_negatives.json").write_text(json.dumps({"gains": summary, "runs": [
        {k: v for k, v in r.items() if k != "items"} for r in by.values()]}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    report() if sys.argv[1] == "report" else run(sys.argv[1])
