"""Exported models against PyTorch: encode speed and quality on the run's own evaluation set (issue 19, item 6).

On the demo (packaged all-MiniLM-L6-v2 fine-tuned on the Swedish FAQ; ``--run`` takes any
finished embedding run instead), in one process:

* ``tunewise export RUN --format onnx`` and ``--quantize int8`` (torch.onnx dynamo exporter,
  onnxruntime dynamic int8 quantization);
* quality: the run's held-out evaluation (the same :func:`evaluate_retrieval` that scored the
  run) with the PyTorch model, the ONNX graph and the int8 graph, each run through the
  model's own SentenceTransformer (:func:`tunewise.export.onnx_sentence_transformer`);
* speed: every evaluation text (corpus + queries) encoded at batch size 32, and 64 texts one
  at a time, one thread for every engine (torch and onnxruntime), engines interleaved round by
  round and the median round kept, so that the shared machine's load hits all three alike.

Usage: python benchmarks/export.py [--run RUN] [--rounds 5] [--out benchmarks/results/export.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="A finished embedding run (default: fit the demo, one epoch).")
    parser.add_argument("--label", default=None, help="How the results name the run (default: the demo, or the --run path).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/export.md")
    args = parser.parse_args()

    import torch
    from rich.console import Console

    import tunewise
    from tunewise.config import load_config
    from tunewise.demos import demo_config
    from tunewise.evaluate.retrieval import evaluate_retrieval
    from tunewise.export import export_run, onnx_sentence_transformer
    from tunewise.models.loading import load_sentence_transformer
    from tunewise.run import quiet_libraries
    from tunewise.tasks import TASKS

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="tunewise-export-bench-"))
    console = Console(stderr=True)
    if args.run is None:
        console.print("fitting the demo (MiniLM, Swedish FAQ, 1 epoch)")
        run = tunewise.fit(demo_config(str(work / "run"), overrides=["train.epochs=1"]), console=Console(quiet=True)).output_dir
    else:
        run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    task = TASKS.get(cfg.task)()
    data = task.prepare_data(cfg)
    texts = list(data.eval.corpus.values()) + list(data.eval.queries.values())

    exports = {}
    for quantize in (None, "int8"):
        start = time.perf_counter()
        result = export_run(run, quantize=quantize, output=work / f"onnx-{quantize or 'fp32'}")
        exports[quantize] = (result, time.perf_counter() - start)
        console.print(f"exported {quantize or 'fp32'} in {exports[quantize][1]:.1f} s")

    torch.set_num_threads(1)
    engines = {
        "PyTorch (fp32)": load_sentence_transformer(str(run), device="cpu"),
        "ONNX (fp32)": onnx_sentence_transformer(run, exports[None][0].file, threads=1),
        "ONNX int8 (dynamic)": onnx_sentence_transformer(run, exports["int8"][0].file, threads=1),
    }
    files = {"PyTorch (fp32)": sum(f.stat().st_size for f in run.rglob("*.safetensors")),
             "ONNX (fp32)": exports[None][0].file.stat().st_size, "ONNX int8 (dynamic)": exports["int8"][0].file.stat().st_size}
    quality = {name: evaluate_retrieval(model, data.eval, cfg.eval, show_progress=False).metrics for name, model in engines.items()}

    batch_times: dict[str, list[float]] = {name: [] for name in engines}
    single_times: dict[str, list[float]] = {name: [] for name in engines}
    singles = texts[:64]
    for model in engines.values():  # warm-up: first calls allocate and (onnxruntime) optimise
        model.encode(texts[:32], batch_size=32, show_progress_bar=False)
    for r in range(args.rounds):
        console.print(f"round {r + 1}/{args.rounds}")
        for name, model in engines.items():
            start = time.perf_counter()
            model.encode(texts, batch_size=32, show_progress_bar=False)
            batch_times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            for text in singles:
                model.encode([text], batch_size=1, show_progress_bar=False)
            single_times[name].append(time.perf_counter() - start)

    primary = cfg.eval.primary
    base = "PyTorch (fp32)"
    rows = []
    for name in engines:
        batch, single = statistics.median(batch_times[name]), statistics.median(single_times[name])
        rows.append({
            "engine": name, "file_mib": round(files[name] / 2**20, 1),
            "texts_per_s_batch32": round(len(texts) / batch, 1), "ms_per_text_batch1": round(1000 * single / len(singles), 2),
            "speedup_batch32": round(statistics.median(batch_times[base]) / batch, 2),
            "speedup_batch1": round(statistics.median(single_times[base]) / single, 2),
            primary: round(quality[name][primary], 4),
            f"{primary}_points_vs_pytorch": round(100 * (quality[name][primary] - quality[base][primary]), 2),
            "metrics": quality[name],
        })
    record = {
        "run": args.label or ("demo (packaged MiniLM, Swedish FAQ, 1 epoch)" if args.run is None else str(run)),
        "eval": {"queries": len(data.eval.queries), "corpus": len(data.eval.corpus), "primary": primary},
        "texts_encoded": len(texts), "rounds": args.rounds, "threads": 1,
        "export_seconds": {("int8" if q else "fp32"): round(s, 1) for q, (_, s) in exports.items()},
        "max_abs_diff_vs_pytorch": {("int8" if q else "fp32"): r.max_abs_diff for q, (r, _) in exports.items()},
        "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    out.write_text(markdown(record), encoding="utf-8")
    print(markdown(record))


def markdown(record: dict) -> str:
    primary = record["eval"]["primary"]
    lines = [
        "# Export benchmark: ONNX and int8 ONNX against PyTorch",
        "",
        f"Run: {record['run']}; evaluation: {record['eval']['queries']} held-out queries against "
        f"{record['eval']['corpus']} documents (the run's own split). Speed: {record['texts_encoded']} texts "
        f"(corpus + queries) at batch size 32, and 64 texts one at a time; {record['threads']} thread per engine, "
        f"engines interleaved, median of {record['rounds']} rounds. Measured {record['measured_at']} on "
        f"{record['machine']['platform']} ({record['machine']['cpus']} CPUs shared with other work: absolute numbers "
        "are contended, the ratios are side by side in one process).",
        "",
        f"| engine | weights MiB | texts/s (batch 32) | speed-up (batch 32) | ms/text (batch 1) | speed-up (batch 1) | {primary} | vs PyTorch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(f"| {r['engine']} | {r['file_mib']} | {r['texts_per_s_batch32']} | {r['speedup_batch32']}x | "
                     f"{r['ms_per_text_batch1']} | {r['speedup_batch1']}x | {r[primary]:.4f} | "
                     f"{r[f'{primary}_points_vs_pytorch']:+.2f} points |")
    int8 = record["rows"][2]
    lines += [
        "",
        f"In one line: int8 ONNX: {int8['speedup_batch32']}x faster at batch 32 ({int8['speedup_batch1']}x one at a time), "
        f"{primary} {int8[f'{primary}_points_vs_pytorch']:+.2f} points.",
        "",
        f"Export took {record['export_seconds']['fp32']} s (fp32) and {record['export_seconds']['int8']} s (int8); "
        f"largest difference from PyTorch on the exporter's check texts: {record['max_abs_diff_vs_pytorch']['fp32']:.2g} "
        f"(fp32, token embeddings), {record['max_abs_diff_vs_pytorch']['int8']:.2g} (int8).",
        "",
        "Every metric of the evaluation is in export.json beside this file.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
