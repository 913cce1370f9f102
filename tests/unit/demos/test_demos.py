"""The demo registry: what each demo declares, its config, and the one function that runs them all."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.demos import DEFAULT_DEMO, DEMOS, Demo, cached_jsonl, demo_config, run_demo
from tunewise.errors import TunewiseError
from tunewise.tasks import TASKS

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_demos_users_type_are_registered_and_run_registered_tasks():
    assert DEMOS.names() == ["classification", "embedding", "image-classification", "image-search", "llm", "speech"]
    assert DEFAULT_DEMO in DEMOS
    for name in DEMOS:
        demo = DEMOS.get(name)
        assert demo.name == name and demo.task in TASKS, name
    with pytest.raises(TunewiseError, match=r"--task: unknown demo 'clasification' \(did you mean 'classification'\?\)"):
        DEMOS.get("clasification")


def test_default_folders():
    assert (DEMOS.get("embedding").folder(), DEMOS.get("embedding").folder(budget=True)) == ("runs/demo", "runs/demo-budget")
    assert (DEMOS.get("llm").folder(), DEMOS.get("llm").folder(budget=True)) == ("runs/demo-llm", "runs/demo-llm-budget")
    assert DEMOS.get("image-search").folder(budget=True) == "runs/demo-image-search-budget"


@pytest.mark.integration
def test_faq_demo_configs():
    cfg = demo_config()  # the embedding demo: 400 training pairs, the other 103 of 503 questions held out
    assert (cfg.task, cfg.output_dir, cfg.overwrite, cfg.data.kind, cfg.data.eval_size) == ("embedding", "runs/demo", True, "pairs", 103)
    assert Path(cfg.data.train).name == "faq_sv_pairs.jsonl" and cfg.eval.k == [1, 10, 20]
    budget = demo_config(name="embedding", budget=True, lang="en", overrides=["train.epochs=1"])
    assert budget.output_dir == "runs/demo-budget" and Path(budget.data.train).name == "faq_en_pairs.jsonl"
    assert budget.train.epochs == 1.0  # the user's override beats the demo's budget value (2)
    assert demo_config(name="embedding", budget=True).train.epochs == 2.0
    classify = demo_config("out", name="classification")
    assert (classify.task, classify.output_dir, classify.train.epochs, classify.data.eval_fraction) == ("classification", "out", 5.0, 0.2)
    rows = [json.loads(line) for line in Path(cfg.data.train).read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 503 and set(rows[0]) == {"id", "category", "query", "positive"}


@pytest.mark.integration
def test_llm_demo_config():
    cfg = demo_config(name="llm")
    assert TASKS.canonical(cfg.task) == TASKS.canonical(DEMOS.get("llm").task)
    assert cfg.strategy_name == "lora" and (cfg.data.max_train, cfg.data.eval_size) == (200, 40)
    assert Path(cfg.data.train).name == "faq_en_json_format.jsonl"  # English by default
    row = json.loads(Path(cfg.data.train).read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"id", "prompt", "completion"} and re.fullmatch(r'\{"category": "[a-z0-9åäö-]+"\}', row["completion"])


def test_cached_jsonl_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    path = cached_jsonl("x.jsonl", lambda: [{"a": "å"}])
    assert path == tmp_path / "x.jsonl" and path.read_text(encoding="utf-8") == '{"a": "å"}\n'
    assert cached_jsonl("x.jsonl", lambda: pytest.fail("rebuilt")) == path


def test_bad_language_fails_before_any_data_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    with pytest.raises(TunewiseError, match="--lang: use sv or en, got 'de'"):
        demo_config(lang="de")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def toy_demo(tmp_path, monkeypatch):
    """A demo added the way a new one would be: one entry, nothing in the CLI."""
    data = tmp_path / "toy.jsonl"
    data.write_text('{"query": "q", "positive": "a"}\n', encoding="utf-8")
    demo = Demo(name="toy", task="embedding", data=lambda lang: data, values={"train.epochs": 1.5},
                banner="toy {name} ({lang}, {strategy})", sweep={"seeds": 2, "validate": True})
    monkeypatch.setitem(DEMOS._items, "toy", demo)  # registered only for this test
    return demo


@pytest.fixture()
def calls(monkeypatch):
    """fit and run_budget replaced by recorders (run_demo must route, not train)."""
    import tunewise.budget
    import tunewise.run

    seen: dict = {}

    def fit(cfg, console=None):
        seen["fit"] = cfg
        return SimpleNamespace(config=cfg)

    def run_budget(cfg, **kwargs):
        seen["budget"] = (cfg, kwargs)
        return SimpleNamespace(config=cfg)

    monkeypatch.setattr(tunewise.run, "fit", fit)
    monkeypatch.setattr(tunewise.budget, "run_budget", run_budget, raising=False)
    return seen


def test_run_demo_routes_a_new_entry_to_fit_and_to_the_budget_sweep(toy_demo, calls):
    console = Console(record=True, width=200)
    run_demo("toy", output_dir="o", overrides=["seed=3"], console=console)
    cfg = calls["fit"]
    assert (cfg.task, cfg.output_dir, cfg.train.epochs, cfg.seed, cfg.overwrite) == ("embedding", "o", 1.5, 3, True)
    assert console.export_text() == f"toy toy (sv, {cfg.strategy_name})\n"

    run_demo("toy", budget=True, console=Console(quiet=True), sweep={"seeds": 5, "price_per_hour": 2.0})
    cfg, kwargs = calls["budget"]
    assert cfg.output_dir == "runs/demo-toy-budget" and kwargs["output_dir"] == cfg.output_dir
    assert (kwargs["seeds"], kwargs["validate"], kwargs["price_per_hour"]) == (5, True, 2.0)  # the user's seeds win
    with pytest.raises(TunewiseError, match="need budget=True"):
        run_demo("toy", sweep={"seeds": 2})


def test_cli_lists_and_routes_a_new_entry(toy_demo, monkeypatch):
    import tunewise.cli.app
    import tunewise.demos

    runner = CliRunner()
    assert "toy" in runner.invoke(app, ["demo", "--task", "nosuch"]).stderr  # listed from the registry
    seen = []

    def recorder(name, **kwargs):
        seen.append((name, kwargs))
        raise TunewiseError("routed")

    monkeypatch.setattr(tunewise.cli.app, "run_demo", recorder)
    monkeypatch.setattr(tunewise.demos, "run_demo", recorder)
    assert runner.invoke(app, ["demo", "--task", "toy", "--lang", "en"]).stderr == "error: routed\n"
    assert seen[-1] == ("toy", {"output_dir": None, "lang": "en", "overrides": None, "console": tunewise.cli.app.console})
    result = runner.invoke(app, ["demo", "--task", "toy", "--budget", "--seeds", "2", "-s", "seed=1"])
    assert result.exit_code == 2 and result.stderr == "error: routed\n"
    name, kwargs = seen[-1]
    assert (name, kwargs["budget"], kwargs["output_dir"], kwargs["overrides"]) == ("toy", True, "runs/demo-toy-budget", ["seed=1"])
    assert kwargs["sweep"]["seeds"] == 2 and {"console", "progress", "price_per_hour"} <= set(kwargs["sweep"])
    runner.invoke(app, ["demo-budget", "--fresh"])
    name, kwargs = seen[-1]
    assert (name, kwargs["output_dir"], kwargs["lang"], kwargs["sweep"]["fresh"]) == (DEFAULT_DEMO, "runs/demo-budget", "sv", True)


@pytest.mark.integration
def test_demo_banner_is_the_readme_line(calls):
    """`tunewise demo` prints what the README shows (its first line; the rest are measurements)."""
    block = README.read_text(encoding="utf-8").split("## What the demo shows", 1)[1].split("```text\n", 1)[1]
    console = Console(record=True, width=200)
    run_demo(console=console)
    assert console.export_text() == block.splitlines()[0] + "\n"
    # the other banners, as they were before the registry
    banners = {("embedding", True): "tunewise budget demo: all-MiniLM-L6-v2 on the construction FAQ (sv)",
               ("llm", False): "tunewise demo --task llm: SmolLM2-135M-Instruct (lora) learns to answer as a JSON object",
               ("llm", True): "tunewise budget demo: task llm",
               ("classification", False): "tunewise demo --task classification"}
    for (name, budget), banner in banners.items():
        run_demo(name, budget=budget, console=console)
        assert console.export_text() == banner + "\n", name
