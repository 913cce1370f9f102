"""How close is ``tunewise memory`` to the measured peak? Estimate vs measurement, per row.

Each configuration trains a few real steps (forward, backward, AdamW step, zero_grad) in a
fresh Python process, inside :class:`tunewise.memory.PeakMemory`, so that no measurement
sees another's leftovers:

* encoders: sentence-transformers with MultipleNegativesRankingLoss on random texts whose
  token count is exactly ``seq_len`` (every text is truncated there); the packaged
  all-MiniLM-L6-v2 and smaller random BERTs built from a config;
* SmolLM2-135M-Instruct (the packaged GGUF, converted once by
  :func:`tunewise.models.smollm.packaged_smollm2_path`): a causal-LM step on random token
  ids, full or with LoRA (peft, r=8 on q_proj/v_proj), with and without gradient
  checkpointing.

On CPU the measurement is the process's peak resident memory (VmHWM), which includes the
Python/torch runtime. That runtime is measured, not fitted: an idle process that imported
torch, transformers and sentence-transformers (and peft, for LoRA rows) is measured first
and its RSS is the estimate's "framework overhead" for every CPU row.

On a CUDA device (``--device cuda``) the measurement is ``torch.cuda.max_memory_allocated``
and the models are built from their configs with random weights (memory does not depend on
the values); encoders use the same MultipleNegativesRankingLoss computation on token ids.

Run: ``python benchmarks/memory_accuracy.py`` (about 10 minutes on 2 cores); results go
to ``benchmarks/results/memory_accuracy.{md,json}``. ``--device cuda --out FILE`` writes the
GPU rows to FILE; ``--merge FILE`` adds such rows to the committed results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STEPS = 3
MINILM_CONFIG = {  # the packaged all-MiniLM-L6-v2's config.json (for GPU rows, which lack the package)
    "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
    "intermediate_size": 1536, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
}
SMOLLM2_CONFIG = {  # SmolLM2-135M-Instruct's config (LlamaForCausalLM)
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152, "head_dim": 64,
    "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "hidden_act": "silu",
}
TINY_BERT = {**MINILM_CONFIG, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}
SMALL_BERT = {**MINILM_CONFIG, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}

NOTES = """
- Activations are counted tensor by tensor from what autograd saves in the transformers 5
  implementations (BertLayer, LlamaDecoderLayer; unit tests compare the formula with
  `saved_tensors_hooks` counts), not fitted to these measurements. No per-row factor exists.
- CPU: glibc keeps freed activation memory in its heap by default (its mmap threshold rises
  to 32 MiB), and the resident memory then grows step after step: MiniLM b16 s128 reached
  2.2, 2.8 and 3.6 GiB after steps 1-3 against a 1.9 GiB live peak (-35% error for the
  estimate). `tunewise.memory.measure.configure_cpu_allocator()` fixes the thresholds
  (mallopt) so freed tensors go back to the OS; every CPU row here runs with it, the
  estimate assumes it, and tunewise training on CPU should call it before its first step.
  It did not slow the steps measurably (CPU time per step unchanged).
- CPU framework overhead is the measured idle RSS of a process with the same imports; it is
  the whole of the overhead term, nothing is added per row.
- GPU rows compare `torch.cuda.max_memory_allocated` with the estimate minus the CUDA context
  (512 MiB assumed, not measured by the allocator); the cuBLAS workspace (32 MiB) is counted.
- Where the estimate is weakest: the attention kernel choice (SDPA's math path stores
  a*s per token; fp32 grouped-query attention on CUDA takes it, costing SmolLM2 about 21 KB
  per token and block) follows torch's dispatch rules and can change between versions;
  the two largest errors are MiniLM with gradient checkpointing on CPU (+10%: the backward
  buffers of the recomputed block are over-counted) and MiniLM in bf16 on the GPU (-10%: an
  unexplained ~2 KB per token and block, possibly the attention mask under autocast);
  texts are assumed padded to `seq_len` (dynamic padding makes the estimate an upper bound);
  CNN activations are a coarse per-block count with no row here.
- QLoRA rows on CPU load the model through tunewise's own `strategies.qlora.load_4bit` (NF4,
  compute dtype "auto": bf16 on this CPU, which has AVX512-BF16; peft's
  `prepare_model_for_kbit_training` upcasts embeddings and norms to fp32) and train without
  autocast, as `tunewise fit --strategy qlora` does on CPU (bitsandbytes 0.50.2's CPU backend).
  The two CUDA QLoRA rows were measured by an earlier version of this script: a bf16 base
  without peft's preparation and without autocast; tunewise itself prepares the model and
  trains under bf16 autocast on CUDA, which the estimate now models (fp32 embeddings and
  norms, +57 MiB for SmolLM2). Their estimate columns are the ones recorded then and were not
  recomputed: no GPU was lent to re-measure them (`--reestimate` leaves CUDA blocks alone).
"""

CPU_ROWS = [
    dict(model="tiny-bert", strategy="full", batch_size=16, seq_len=64),
    dict(model="small-bert", strategy="full", batch_size=16, seq_len=128),
    dict(model="minilm", strategy="full", batch_size=16, seq_len=128),
    dict(model="minilm", strategy="full", batch_size=32, seq_len=128),
    dict(model="minilm", strategy="full", batch_size=16, seq_len=256),
    dict(model="minilm", strategy="full", batch_size=32, seq_len=256, gradient_checkpointing=True),
    dict(model="minilm", strategy="lora", batch_size=32, seq_len=128),
    dict(model="smollm2", strategy="full", batch_size=2, seq_len=128),
    dict(model="smollm2", strategy="full", batch_size=4, seq_len=256, gradient_checkpointing=True),
    dict(model="smollm2", strategy="lora", batch_size=4, seq_len=256),
    dict(model="smollm2", strategy="lora", batch_size=8, seq_len=256, gradient_checkpointing=True),
    dict(model="smollm2", strategy="full", batch_size=4, seq_len=256),
    dict(model="smollm2", strategy="lora", batch_size=2, seq_len=512),
    dict(model="smollm2", strategy="qlora", batch_size=4, seq_len=256),
    dict(model="smollm2", strategy="qlora", batch_size=8, seq_len=256, gradient_checkpointing=True),
    # CPU bf16 autocast (train.precision auto on CPUs with avx512_bf16 / AMX), added 2026-11-27
    dict(model="minilm", strategy="full", batch_size=16, seq_len=128, precision="bf16"),
    dict(model="minilm", strategy="full", batch_size=32, seq_len=128, precision="bf16"),
]
GPU_ROWS = [
    dict(model="minilm", strategy="full", batch_size=64, seq_len=128),
    dict(model="minilm", strategy="full", batch_size=64, seq_len=128, precision="bf16"),
    dict(model="smollm2", strategy="full", batch_size=8, seq_len=512),
    dict(model="smollm2", strategy="full", batch_size=8, seq_len=512, precision="bf16"),
    dict(model="smollm2", strategy="full", batch_size=8, seq_len=512, precision="bf16", gradient_checkpointing=True),
    dict(model="smollm2", strategy="lora", batch_size=8, seq_len=512),
    dict(model="smollm2", strategy="lora", batch_size=8, seq_len=512, precision="bf16"),
    dict(model="smollm2", strategy="qlora", batch_size=8, seq_len=512),
    dict(model="smollm2", strategy="qlora", batch_size=8, seq_len=512, gradient_checkpointing=True),
    # the next GPU session: tunewise's own QLoRA loading (peft-prepared, bf16 autocast)
    dict(model="smollm2", strategy="qlora", batch_size=8, seq_len=512, prepared=True),
]

# Whole `tunewise` runs (measured by hand with the commands named; kept here so that
# regenerating the tables keeps them).
WHOLE_RUNS = """
## Runs with glibc's default allocator (added 2026-11-23)

The rows above are measured with trimming (as the benchmark configures it). A `tunewise fit`
on CPU keeps glibc's default allocator unless memory is tight (`train.cpu_allocator: auto`,
about 20% faster), and then adds a measured retention of 0.5 x the peak activations to the
estimate (`tunewise.memory.estimate.with_cpu_allocator`; the one empirical factor in the
estimate, calibrated on the demo: retention was 0.40-0.52 x activations). Checked on whole runs:

| run | estimate (MiB) | measured (MiB) | error |
|---|---:|---:|---:|
| `tunewise demo` (MiniLM full, b16, 400 pairs x 3 epochs), fresh clone | 1956 | 2153 | -9.2% |
| `tunewise demo --task llm` (SmolLM2-135M, LoRA r=8, all linear layers, dropout 0.05, b8, longest seq 55) | 2837 | 3024-3052 | -6.2%..-7.0% |
| the same with `strategy.name=qlora` (NF4 base on CPU, bf16 matmuls) | 2489 | 2420 | +2.9% |
| the same with `strategy=full`, learning rate 5e-5 | 3478 | 3450-3537 | +0.8%..-1.7% |
| earlier LLM demo runs with LoRA on q/v only: `lora` | 2231 | 2297-2350 | -2.9%..-5.0% |
| the same, `qlora` | 1883 | 2048-2052 | -8.0%..-8.2% |

The LLM runs are from `benchmarks/llm_strategies.py` and fresh-clone demos (2026-11-23); all
estimates in this table were recomputed with the committed code. Three things the estimate of a
`tunewise fit` on a causal LM missed before 2026-11-23 (errors were -4% to -19%, one -34%):
- a run's own LoRA targets: it assumed q/v whatever the run adapted (-34% on the all-linear run);
  runs are now estimated from the adapters the prepared model holds;
- LoRA's dropout: every adapted layer keeps its own dropped copy of its input and the dropout
  mask instead of sharing the layer's input (counted with autograd's saved-tensor hooks;
  `tests/unit/test_memory_estimate.py` pins it for seven target/dropout sets);
- TRL's loss: tunewise trains causal LMs with TRL's SFTTrainer, whose fused LM head scores the
  vocabulary in tiles of up to 4,096 tokens x 32,768 entries and keeps no logits, but on CPU its
  torch fallback holds about 8.3 fp32 tiles in backward (measured 8.3-8.4 tiles for vocabularies
  of 16,000, 49,152 and 131,072; on SmolLM2 0.28 MB per token more than the model's own loss at
  440 and 2,048 tokens). Tiles of 32 MiB and more are mmapped by glibc and never retained, so
  the default allocator's retention leaves them out. On CUDA the estimate still counts full
  logits (TRL's Triton kernel needs less; not measured here).
The rows above the notes train with the model's own loss and peft's default dropout 0 on q/v,
and are estimated that way (`fused_lm_head=False`, `lora_dropout=0`).
"""


def _step(model: str) -> str:
    return "lm" if model == "smollm2" else "contrastive"


def _label(row: dict) -> str:
    precision = "4bit" if row["strategy"] == "qlora" else row.get("precision", "fp32")
    parts = [row["model"], row["strategy"], precision, f"b{row['batch_size']}", f"s{row['seq_len']}"]
    if row.get("gradient_checkpointing"):
        parts.append("ckpt")
    if row.get("prepared"):
        parts.append("prepared")
    return " ".join(parts)


# ------------------------------------------------------------------ worker (one process per row)
def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _worker_baseline(peft: bool) -> dict:
    import gc

    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    if peft:
        import peft as _peft  # noqa: F401
    gc.collect()
    time.sleep(0.5)
    return {"rss_bytes": _rss()}


def _random_texts(tokenizer, n: int, seq_len: int, rng) -> list[str]:
    vocab = [t for t in tokenizer.get_vocab() if t.isalpha() and t.isascii() and len(t) > 2]
    return [" ".join(rng.choice(vocab) for _ in range(seq_len + 8)) for _ in range(n)]


def _encoder_model_cpu(row: dict, tmp: Path):
    from sentence_transformers import SentenceTransformer

    from tunewise.models.defaults import packaged_minilm_path

    if row["model"] == "minilm":
        return SentenceTransformer(str(packaged_minilm_path()), device="cpu")
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = TINY_BERT if row["model"] == "tiny-bert" else SMALL_BERT
    folder = tmp / row["model"]
    BertModel(BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(packaged_minilm_path())).save_pretrained(str(folder))
    return SentenceTransformer(str(folder), device="cpu")


def _run_encoder_cpu(row: dict, peak_cls) -> dict:
    import random
    import tempfile

    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    with tempfile.TemporaryDirectory() as tmp:
        model = _encoder_model_cpu(row, Path(tmp))
    model.max_seq_length = row["seq_len"]
    if row["strategy"] == "lora":
        from peft import LoraConfig

        model.add_adapter(LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    if row.get("gradient_checkpointing"):
        model[0].auto_model.gradient_checkpointing_enable()
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model)
    rng = random.Random(0)
    b = row["batch_size"]
    batches = [
        [model.tokenize(_random_texts(model.tokenizer, b, row["seq_len"], rng)) for _ in range(2)] for _ in range(STEPS)
    ]
    assert batches[0][0]["input_ids"].shape == (b, row["seq_len"]), batches[0][0]["input_ids"].shape
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    before = _rss()
    losses = []
    autocast = row.get("precision") == "bf16"  # tunewise: bf16 autocast on CPUs with native bf16
    with peak_cls("cpu") as peak:
        for features in batches:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(features, None)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
    return {"peak": peak.as_dict(), "rss_before_bytes": before, "losses": losses}


def _run_causal_lm(row: dict, peak_cls, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype_kw = {}
    qlora_as_tunewise = row["strategy"] == "qlora" and bool(device == "cpu" or row.get("prepared"))
    if device == "cpu":
        from tunewise.models.smollm import packaged_smollm2_path

        source = str(packaged_smollm2_path())
    else:  # random weights of SmolLM2's shape (the GPU machine has no packaged weights)
        source = "/tmp/smollm2-random"
        cfg = LlamaConfig(**{k: v for k, v in SMOLLM2_CONFIG.items() if k != "model_type"})
        AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(source)
    if qlora_as_tunewise:
        # exactly what tunewise's qlora strategy loads: NF4 base (compute dtype "auto"), prepared by peft
        from tunewise.strategies.qlora import QuantOptions, load_4bit

        model = load_4bit(AutoModelForCausalLM, source, device, QuantOptions())
        dtype_kw["compute_dtype"] = str(model.model.layers[0].self_attn.q_proj.compute_dtype)
    elif row["strategy"] == "qlora":  # CUDA rows measured before `prepared` existed: bf16 base, no peft preparation
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0})
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)
    if row["strategy"] in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    if row.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
        if row["strategy"] in ("lora", "qlora"):
            model.enable_input_require_grads()
    model.train()
    vocab = SMOLLM2_CONFIG["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (row["batch_size"], row["seq_len"]), generator=gen).to(device) for _ in range(STEPS)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = bool(row.get("precision") == "bf16" or (qlora_as_tunewise and device != "cpu"))  # tunewise: bf16 autocast on CUDA
    before = _rss()
    losses = []
    with peak_cls(device) as peak:
        for ids in batches:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
    return {"peak": peak.as_dict(), "rss_before_bytes": before, "losses": losses, **dtype_kw}


def _run_encoder_cuda(row: dict, peak_cls) -> dict:
    """MultipleNegativesRankingLoss on mean-pooled BERT embeddings (what sentence-transformers computes)."""
    import torch
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(**{k: v for k, v in MINILM_CONFIG.items() if k != "model_type"})).to("cuda").train()
    gen = torch.Generator().manual_seed(0)
    b, s = row["batch_size"], row["seq_len"]
    batches = [[torch.randint(1000, 30000, (b, s), generator=gen).cuda() for _ in range(2)] for _ in range(STEPS)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = row.get("precision") == "bf16"
    losses = []
    with peak_cls("cuda") as peak:
        for pair in batches:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                mask = torch.ones_like(pair[0])
                emb = []
                for ids in pair:
                    tokens = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    m = mask.unsqueeze(-1).expand(tokens.size()).float()
                    emb.append((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9))
                scores = torch.nn.functional.normalize(emb[0], dim=-1) @ torch.nn.functional.normalize(emb[1], dim=-1).T * 20
                loss = torch.nn.functional.cross_entropy(scores, torch.arange(b, device="cuda"))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
    return {"peak": peak.as_dict(), "losses": losses}


def worker(row: dict) -> dict:
    import torch

    from tunewise.memory import PeakMemory
    from tunewise.memory.measure import configure_cpu_allocator

    torch.manual_seed(0)
    device = row.get("device", "cpu")
    if device == "cpu" and not row.get("glibc_default"):
        configure_cpu_allocator()  # as tunewise training runs do: freed activations go back to the OS
    if row.get("baseline"):
        return _worker_baseline(row.get("peft", False))
    if device == "cpu":
        torch.set_num_threads(2)
        import sentence_transformers  # noqa: F401 - same imports as the baseline process
        import transformers  # noqa: F401

        if row["strategy"] in ("lora", "qlora"):
            import peft  # noqa: F401
    if row["model"] == "smollm2":
        return _run_causal_lm(row, PeakMemory, device)
    if device == "cpu":
        return _run_encoder_cpu(row, PeakMemory)
    return _run_encoder_cuda(row, PeakMemory)


# ------------------------------------------------------------------ parent
def _spawn(row: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    started = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(row)], capture_output=True, text=True, env=env, timeout=900
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed for {row}:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["wall_s"] = round(time.time() - started, 1)
    return out


def _arch(model: str):
    from transformers import BertConfig, LlamaConfig

    from tunewise.memory import load_arch

    if model == "smollm2":
        return load_arch(LlamaConfig(**{k: v for k, v in SMOLLM2_CONFIG.items() if k != "model_type"}), n_params=None).replace(source="SmolLM2-135M")
    cfg = {"minilm": MINILM_CONFIG, "tiny-bert": TINY_BERT, "small-bert": SMALL_BERT}[model]
    return load_arch(BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).replace(source=model)


def _estimate(row: dict, device: str, overhead: int | None):
    from tunewise.memory import estimate

    return estimate(
        _arch(row["model"]), step=_step(row["model"]), strategy=row["strategy"], precision=row.get("precision", "fp32"),
        batch_size=row["batch_size"], seq_len=row["seq_len"], gradient_checkpointing=row.get("gradient_checkpointing", False),
        device=device, overhead_bytes=overhead, lora_targets=("q", "v"), lora_dropout=0.0,  # the rows' peft LoraConfig
        fused_lm_head=False,  # the rows train with the model's own loss, not TRL's
    )


def run_rows(rows: list[dict], device: str) -> dict:
    sys.path.insert(0, str(HERE.parent / "src"))
    baseline = {}
    if device == "cpu":
        for peft in (False, True):
            baseline[peft] = _spawn({"baseline": True, "peft": peft})["rss_bytes"]
            libraries = f"torch+transformers+sentence-transformers{'+peft' if peft else ''}"
            print(f"idle runtime RSS ({libraries}): {baseline[peft] / 2**20:.0f} MiB", flush=True)
    out_rows = []
    for row in rows:
        row = {**row, "device": device}
        result = _spawn(row)
        overhead = baseline.get(row["strategy"] in ("lora", "qlora")) if device == "cpu" else None
        est = _estimate(row, device, overhead)
        estimated = est.total_bytes if device == "cpu" else est.allocator_bytes
        measured = result["peak"]["peak_bytes"]
        entry = {
            "config": _label(row), "device": device, "row": row, "estimated_bytes": estimated, "measured_bytes": measured,
            "error_pct": round(100 * (estimated - measured) / measured, 1), "method": result["peak"]["method"],
            "estimate": est.as_dict(), "loss_first_last": [result["losses"][0], result["losses"][-1]], "wall_s": result["wall_s"],
        }
        out_rows.append(entry)
        print(f"{entry['config']:<42} est {estimated / 2**20:8.0f} MiB  measured {measured / 2**20:8.0f} MiB  "
              f"error {entry['error_pct']:+6.1f}%  ({result['wall_s']} s)", flush=True)
    import torch

    meta = {"device": device, "python": platform.python_version(), "torch": torch.__version__, "steps": STEPS,
            "cpu_runtime_baseline_bytes": baseline.get(False), "cpu_runtime_baseline_peft_bytes": baseline.get(True)}
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name(0)
    return {"meta": meta, "rows": out_rows}


def reestimate(block: dict) -> None:
    """Recompute the estimate of every row of ``block`` (the measurements stay as measured)."""
    meta = block["meta"]
    for entry in block["rows"]:
        row = entry["row"]
        overhead = None
        if meta["device"] == "cpu":
            overhead = meta["cpu_runtime_baseline_peft_bytes" if row["strategy"] in ("lora", "qlora") else "cpu_runtime_baseline_bytes"]
        est = _estimate(row, meta["device"], overhead)
        entry["estimate"] = est.as_dict()
        entry["estimated_bytes"] = est.total_bytes if meta["device"] == "cpu" else est.allocator_bytes
        entry["error_pct"] = round(100 * (entry["estimated_bytes"] - entry["measured_bytes"]) / entry["measured_bytes"], 1)


def write_results(results: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Memory estimate vs measured peak",
        "",
        "Generated by `benchmarks/memory_accuracy.py`. Each row trains "
        f"{STEPS} steps (forward, backward, AdamW step) in a fresh process. CPU rows: peak process RSS "
        "(VmHWM), which includes the Python/torch runtime; the estimate's framework overhead is the "
        "measured RSS of an idle process with the same imports. GPU rows: `torch.cuda.max_memory_allocated`, "
        "compared with the estimate minus the CUDA context. Error = (estimate - measured) / measured.",
        "",
    ]
    for block in results:
        meta = block["meta"]
        lines.append(f"## {meta['device'].upper()}" + (f" ({meta['gpu']})" if meta.get("gpu") else " (2 cores)"))
        lines.append("")
        if meta.get("note"):
            lines += [meta["note"], ""]
        if meta.get("cpu_runtime_baseline_bytes"):
            lines.append(f"Idle runtime RSS: {meta['cpu_runtime_baseline_bytes'] / 2**20:.0f} MiB "
                         f"(+peft: {meta['cpu_runtime_baseline_peft_bytes'] / 2**20:.0f} MiB); torch {meta['torch']}.")
        else:
            lines.append(f"torch {meta['torch']}.")
        lines += ["", "| configuration | estimate (MiB) | measured (MiB) | error | peak phase | weights | grads | optimizer "
                  "| activations | overhead* |",
                  "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in block["rows"]:
            e = r["estimate"]
            mib = lambda x: f"{x / 2**20:.0f}"  # noqa: E731
            lines.append(
                f"| {r['config']} | {mib(r['estimated_bytes'])} | {mib(r['measured_bytes'])} | {r['error_pct']:+.1f}% | {e['peak_phase']} | "
                f"{mib(e['weights_bytes'])} | {mib(e['gradients_bytes'])} | {mib(e['optimizer_bytes'])} | {mib(e['activations_bytes'])} | "
                f"{mib(e['overhead_bytes'] - e['outside_allocator_bytes'])} |"
            )
        worst = max(abs(r["error_pct"]) for r in block["rows"])
        lines += ["", "*framework overhead the measurement sees: idle runtime RSS on CPU; cuBLAS workspace on CUDA "
                  "(the context is outside the allocator)."]
        lines += ["", f"Largest absolute error: {worst:.1f}% over {len(block['rows'])} configurations.", ""]
    lines += ["## Notes", "", NOTES.strip(), "", WHOLE_RUNS.strip(), ""]
    (RESULTS / "memory_accuracy.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", type=int, nargs="*", help="row indices to run")
    parser.add_argument("--out", help="write the rows' JSON here instead of the committed results")
    parser.add_argument("--merge", help="add the blocks of this JSON file to the committed results")
    parser.add_argument("--reestimate", action="store_true",
                        help="recompute the estimate columns of --merge/committed rows with the current code (measurements kept)")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.merge or args.reestimate:
        path = RESULTS / "memory_accuracy.json"
        current = json.loads(path.read_text()) if path.exists() else []
        extra = json.loads(Path(args.merge).read_text()) if args.merge else []
        if args.reestimate:
            for block in current + extra:
                if block["meta"]["device"] == "cpu":  # CUDA blocks: the QLoRA rows measured another regime
                    reestimate(block)
        kept = [b for b in current if b["meta"]["device"] not in {e["meta"]["device"] for e in extra}]
        write_results(kept + extra)
        return
    rows = CPU_ROWS if args.device == "cpu" else GPU_ROWS
    if args.only:
        rows = [rows[i] for i in args.only]
    block = run_rows(rows, args.device)
    if args.out:
        Path(args.out).write_text(json.dumps([block], indent=2) + "\n")
    else:
        existing = json.loads((RESULTS / "memory_accuracy.json").read_text()) if (RESULTS / "memory_accuracy.json").exists() else []
        write_results([b for b in existing if b["meta"]["device"] != block["meta"]["device"]] + [block])


if __name__ == "__main__":
    main()
