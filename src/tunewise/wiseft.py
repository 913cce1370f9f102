"""WiSE-FT runs: blend pre-trained and fine-tuned weights, score each blend in-domain and for forgetting.

For each alpha in a sweep, theta = (1 - alpha) * theta_0 + alpha * theta_1
(:func:`tunewise.strategies.interpolate.interpolate_state_dicts`) is scored twice with the
run's primary metric: on the run's own held-out set (in-domain) and on a general-domain set
that measures what fine-tuning forgot. Forgetting is the relative drop of the general score
from the pre-trained model's (0.05 = 5 % lower). The rule: the best in-domain score among
blends that forget at most ``max_forgetting`` (ties to the smaller alpha).

WiSE-FT runs for the tasks whose spec declares ``general_domain="text-pairs"``: their models
re-load as SentenceTransformers and are scored by retrieval. The default general-domain set is
built from packaged data: the English version of the construction FAQ
(``zaragoza_construction_faq.load(lang="en")``), 200 seeded questions searched against all
503 English answers. The demo fine-tunes on the Swedish FAQ,
so this measures whether the model kept the English retrieval it had before; it is the same
topic in another language, not a broad benchmark. Give your own pairs file (query, positive)
with ``--general`` for a real general-domain check.

References: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", arXiv:2109.01903.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console

from tunewise.config import DataConfig, EvalConfig, RunConfig
from tunewise.data.retrieval import IRDataset
from tunewise.errors import TunewiseError
from tunewise.strategies.interpolate import check_alphas, interpolate_state_dicts, pick_alpha
from tunewise.strategies.options import WiseFTOptions

DEFAULT_ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
DEFAULT_MAX_FORGETTING = WiseFTOptions.max_forgetting
GENERAL_DOMAIN = "text-pairs"  # the TaskSpec.general_domain this module builds and scores
GENERAL_QUERIES = 200
RULE = "best in-domain {metric} among blends whose general-domain {metric} is at most {limit:.0%} below the pre-trained model's"


def general_dataset(path: str | None = None, *, seed: int = 42, max_queries: int = GENERAL_QUERIES,
                    option: str = "--general") -> tuple[IRDataset, str]:
    """The general-domain retrieval set: a user pairs file (``option`` names it in errors), or the packaged English FAQ."""
    if path:
        if not Path(path).expanduser().is_file():
            raise TunewiseError(f"{option}: file not found: {path}; give a pairs file (query, positive) or leave it out "
                                "for the packaged English FAQ")
        from tunewise.data.retrieval import load_items

        items = [(q, a) for q, a, *_ in load_items(DataConfig(train=path, kind="pairs"))]
        described = f"{path} (user file)"
    else:
        from tunewise.data.packaged import load_faq

        items = [(r["q"], r["a"]) for r in load_faq("en")]
        described = "packaged English construction FAQ (zaragoza-construction-faq, lang=en)"
    if len(items) < 2:
        raise TunewiseError(f"{option}: {path} needs at least 2 (query, positive) pairs")
    doc_ids: dict[str, str] = {}
    for _, a in items:
        doc_ids.setdefault(a, f"d{len(doc_ids)}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    chosen = order[:max_queries]
    queries = {f"g{i}": items[i][0] for i in chosen}
    qrels = {f"g{i}": {doc_ids[items[i][1]]: 1} for i in chosen}
    ds = IRDataset(queries, {d: t for t, d in doc_ids.items()}, qrels)
    return ds, f"{described}: {len(ds.queries)} queries, {len(ds.corpus)} documents"


def sweep(base, finetuned, in_domain: IRDataset, general: IRDataset, eval_cfg: EvalConfig, alphas: list[float],
          max_forgetting: float = DEFAULT_MAX_FORGETTING, console: Console | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Score every blend in-domain and on the general set; pick alpha by the rule.

    Args:
        base, finetuned: models of the same architecture (SentenceTransformers); ``finetuned``
            is used as the working copy and restored before returning.
        precision: the run's evaluation precision (:func:`tunewise.precision.run_precision`), so
            that alpha 1 scores what the run's own evaluation scored.

    Returns:
        ``{"metric", "rule", "max_forgetting", "rows": [{alpha, in_domain, general, forgetting}], "chosen"}``.
    """
    from tunewise.evaluate.retrieval import evaluate_retrieval
    from tunewise.precision import inference_autocast, model_device

    def score(model, data: IRDataset) -> float:
        with inference_autocast(precision, model_device(model)):
            return evaluate_retrieval(model, data, quiet, show_progress=False).metrics[metric]

    alphas = check_alphas(alphas, option="--alphas")
    if not 0.0 <= max_forgetting <= 1.0:
        raise TunewiseError(f"--max-forgetting: must be in [0, 1] (0.05 = 5 % drop), got {max_forgetting}")
    metric = eval_cfg.primary
    quiet = copy.copy(eval_cfg)
    quiet.examples = 0
    theta0 = {k: v.detach().clone() for k, v in base.state_dict().items()}
    theta1 = {k: v.detach().clone() for k, v in finetuned.state_dict().items()}
    interpolate_state_dicts(theta0, theta1, 1.0)  # architecture check before any evaluation
    general_base = score(base, general)
    rows = []
    try:
        for alpha in alphas:
            finetuned.load_state_dict(interpolate_state_dicts(theta0, theta1, alpha))
            ind, gen = score(finetuned, in_domain), score(finetuned, general)
            forgetting = (general_base - gen) / general_base if general_base else 0.0
            rows.append({"alpha": alpha, "in_domain": round(ind, 6), "general": round(gen, 6), "forgetting": round(forgetting, 6)})
            if console is not None:
                console.print(f"  alpha {alpha:.2f}: in-domain {metric} {ind:.4f}, general {gen:.4f} (forgetting {forgetting:+.1%})")
    finally:
        finetuned.load_state_dict(theta1)
    chosen = pick_alpha(rows, max_forgetting)
    return {"metric": metric, "rule": RULE.format(metric=metric, limit=max_forgetting), "max_forgetting": max_forgetting,
            "general_before": round(general_base, 6), "rows": rows, "chosen": chosen}


def markdown(result: dict[str, Any]) -> str:
    """The sweep as a Markdown section (both curves as columns, the chosen alpha marked)."""
    m = result["metric"]
    lines = ["## Robust interpolation (WiSE-FT)", "",
             f"theta = (1 - alpha) * pre-trained + alpha * fine-tuned. General-domain set: {result.get('general', 'n/a')}.",
             f"Rule: {result['rule']}.", "",
             f"| alpha | in-domain {m} | general {m} | forgetting |", "|---:|---:|---:|---:|"]
    for r in result["rows"]:
        mark = " **(chosen)**" if r["alpha"] == result["chosen"]["alpha"] else ""
        lines.append(f"| {r['alpha']:.2f}{mark} | {r['in_domain']:.4f} | {r['general']:.4f} | {r['forgetting']:+.1%} |")
    return "\n".join(lines) + "\n"


@runtime_checkable
class SweepsBlends(Protocol):
    """A task that runs the WiSE-FT sweep itself, on its own general-domain set (speech: WER on
    general speech clips); the sweep here scores retrieval on general-domain text pairs."""

    def wiseft_sweep(self, config: RunConfig, data: Any, model_dir: Path, options: WiseFTOptions,
                     console: Console | None = None) -> dict[str, Any]: ...


def check_task(task: str, option: str) -> None:
    """Refuse a task whose spec does not declare the general-domain set built here.

    Raises:
        TunewiseError: naming ``option`` and the tasks WiSE-FT is available for.
    """
    from tunewise.tasks import TASKS

    def able_task(name: str) -> bool:
        cls = TASKS.get(name)
        return cls.spec.general_domain == GENERAL_DOMAIN or issubclass(cls, SweepsBlends)

    if not able_task(task):
        able = [name for name in TASKS.names() if able_task(name)]
        raise TunewiseError(f"{option}: available for the {', '.join(able)} task{'' if len(able) == 1 else 's'}, "
                            f"not '{task}' yet")


def after_run(task: Any, config: RunConfig, data: Any, model_dir: Path, options: WiseFTOptions,
              console: Console | None = None) -> dict[str, Any]:
    """The in-run option (``strategy.interpolate``): sweep the freshly saved model against its base.

    Args:
        options: the WiSE-FT part of the strategy's options
            (:func:`tunewise.strategies.base.interpolation_options`).
    """
    from tunewise.models.loading import load_sentence_transformer, pick_device

    check_task(config.task, "strategy.interpolate")
    if isinstance(task, SweepsBlends):
        return task.wiseft_sweep(config, data, model_dir, options, console)
    device = pick_device(config.train.device)
    general, described = general_dataset(options.general_data, seed=config.seed, option="strategy.general_data")
    base = task.load_model(config, device)
    tuned = load_sentence_transformer(str(model_dir), device=device, max_seq_length=config.train.max_seq_length)
    from tunewise.precision import run_precision

    result = sweep(base, tuned, data.eval, general, config.eval, options.interpolate, options.max_forgetting, console,
                   precision=run_precision(config, device))
    return {**result, "general": described}


def interpolate_run(run_dir: str | Path, *, alphas: list[float] | None = None, max_forgetting: float = DEFAULT_MAX_FORGETTING,
                    general: str | None = None, output_dir: str | Path | None = None, overwrite: bool = False,
                    console: Console | None = None) -> dict[str, Any]:
    """``tunewise interpolate``: sweep a finished run; with ``output_dir``, save the chosen blend.

    The run's ``config.yaml`` gives the base model and the data (the held-out split is re-made
    with the same seed, so in-domain means the run's own evaluation set).

    Raises:
        TunewiseError: not a run folder, different architectures (a ``head`` run), alpha outside [0, 1].
    """
    from tunewise.config import load_config
    from tunewise.models.loading import load_sentence_transformer, pick_device
    from tunewise.outputs import check_output_dir, staged_dir, write_json, write_text
    from tunewise.tasks import TASKS

    alphas = check_alphas(alphas if alphas is not None else DEFAULT_ALPHAS, option="--alphas")
    if not 0.0 <= max_forgetting <= 1.0:
        raise TunewiseError(f"--max-forgetting: must be in [0, 1] (0.05 = 5 % drop), got {max_forgetting}")
    run = Path(run_dir).expanduser()
    if not (run / "config.yaml").is_file():
        raise TunewiseError(f"interpolate: {run} has no config.yaml; give the folder of a finished tunewise run")
    cfg = load_config(run / "config.yaml")
    check_task(cfg.task, "interpolate")
    if issubclass(TASKS.get(cfg.task), SweepsBlends):
        raise TunewiseError(f"interpolate: a finished {cfg.task} run is not swept by this command yet; set "
                            "strategy.interpolate in its config and fit again (the run sweeps the blends itself)")
    if cfg.strategy_name == "head":
        raise TunewiseError("interpolate: a 'head' run adds layers the pre-trained model lacks; WiSE-FT needs full, partial or merged LoRA runs")
    if cfg.strategy.get("merge") is False:
        raise TunewiseError(f"interpolate: {run} holds an unmerged adapter; run `tunewise merge {run} -o MERGED` and interpolate that run")
    out = check_output_dir(output_dir, overwrite) if output_dir is not None else None
    console = console or Console(stderr=True, quiet=True)
    task = TASKS.get(cfg.task)()
    data = task.prepare_data(cfg)
    general_ds, described = general_dataset(general, seed=cfg.seed)
    device = pick_device(cfg.train.device)
    base = task.load_model(cfg, device)
    tuned = load_sentence_transformer(str(run), device=device, max_seq_length=cfg.train.max_seq_length)
    from tunewise.precision import run_precision

    result = {**sweep(base, tuned, data.eval, general_ds, cfg.eval, alphas, max_forgetting, console,
                      precision=run_precision(cfg, device)), "general": described, "run": str(run)}
    if out is not None:
        alpha = result["chosen"]["alpha"]
        tuned.load_state_dict(interpolate_state_dicts(base.state_dict(), tuned.state_dict(), alpha))
        with staged_dir(out) as staging:
            task.save(tuned, staging)
            write_json(staging / "interpolation.json", result)
            write_text(staging / "README.md", f"# WiSE-FT blend of {run} (alpha = {alpha:g})\n\n" + markdown(result))
        result["output_dir"] = str(out)
    return result

