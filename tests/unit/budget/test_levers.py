"""The budget planner prices the levers: parsing, overrides, cost accounting, labels-equivalent
maths and words (pure, on hand-made BudgetPoints), and a tiny end-to-end sweep with a fake lever."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tunewise.budget.lever_report import (
    Equivalent,
    LeverRow,
    labels_equivalent,
    lever_cost,
    lever_rows,
    lever_sentence,
    sweep_lever_seconds,
)
from tunewise.budget.levers import LEVERS, Lever, check_levers, lever_folder, parse_levers
from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError

runner = CliRunner()


# -- parsing and overrides ----------------------------------------------------------------------------

def test_levers_parse_to_overrides_and_none_comes_first():
    choices = parse_levers("hard-negatives,synthetic:200,augment:2,hard-negatives:3+synthetic:800")
    assert [c.text for c in choices] == ["none", "hard-negatives", "synthetic:200", "augment:2",
                                         "hard-negatives:3+synthetic:800"]  # none added: gains are against it
    over = {c.text: c.overrides() for c in choices}
    assert over["none"] == []
    assert over["hard-negatives"] == ["data.hard_negatives.mine=true"]
    assert over["synthetic:200"] == ["synthetic.queries=200"]
    assert over["augment:2"] == ["data.augment.copies=2"]
    assert over["hard-negatives:3+synthetic:800"] == ["data.hard_negatives.mine=true", "data.hard_negatives.per_pair=3",
                                                      "synthetic.queries=800"]
    assert parse_levers("augment")[1].overrides() == ["data.augment.copies=1"]
    combo = choices[-1]
    assert combo.cost_keys == ["hard_negatives", "synthetic"] and combo.slug == "hard-negatives-3_synthetic-800"
    assert combo.description == "3 mined hard negatives per pair and 800 synthetic queries"
    assert parse_levers(["none", " Synthetic:5 "])[1].text == "synthetic:5"  # a list, spaces and case


@pytest.mark.parametrize("text, message", [
    ("hard-negative", "--levers: unknown lever 'hard-negative' (did you mean 'hard-negatives'?)"),
    ("synthetic", "--levers: synthetic needs a number, synthetic:N"),
    ("synthetic:0", "--levers: in 'synthetic:0' the number after ':' (synthetic queries) must be a positive whole number"),
    ("synthetic:-3", "must be a positive whole number"),
    ("synthetic:1.5", "must be a positive whole number"),
    ("augment:x", "must be a positive whole number"),
    ("none:2", "--levers: none takes no number"),
    ("none+augment", "--levers: 'none' cannot be combined"),
    ("augment+augment:2", "--levers: augment appears twice"),
    ("augment,augment", "--levers: 'augment' is listed twice"),
    ("", "--levers: name at least one lever"),
    ("augment,,none", "--levers: an empty entry"),
])
def test_bad_levers_are_one_line_errors(text, message):
    with pytest.raises(TunewiseError) as err:
        parse_levers(text)
    assert str(err.value).startswith(message) or message in str(err.value)
    assert "\n" not in str(err.value)


def _spec(levers=(), modality="text", step="contrastive"):
    return SimpleNamespace(name="some-task", levers=tuple(levers), modality=modality, memory=SimpleNamespace(step=step))


def test_a_lever_the_task_does_not_declare_is_refused():
    check_levers(parse_levers("hard-negatives,augment,synthetic:4"), _spec(["hard_negatives", "augment"]))
    with pytest.raises(TunewiseError, match=r"--levers: hard-negatives does not apply to task 'some-task' .*"
                                            r"levers for this task: augment"):
        check_levers(parse_levers("hard-negatives"), _spec(["augment"], step="classifier"))
    with pytest.raises(TunewiseError, match="synthetic does not apply"):  # not declared, not a text-pair task
        check_levers(parse_levers("synthetic:4"), _spec(["augment"], step="classifier"))
    with pytest.raises(TunewiseError, match="no lever applies to this task yet"):
        check_levers(parse_levers("augment"), _spec([], modality="image", step="image"))


def test_levers_get_their_own_store_folders(tmp_path):
    none, combo = parse_levers("none,hard-negatives+synthetic:8")
    assert lever_folder(tmp_path, none) == tmp_path  # the plain sweep: an earlier `tunewise budget` is reused
    assert lever_folder(tmp_path, combo) == tmp_path / "levers" / "hard-negatives_synthetic-8"


# -- cost accounting ----------------------------------------------------------------------------------

def _p(size, seed, after, *, train=10.0, levers=None, higher=True, before=0.2):
    return BudgetPoint(size, seed, before, after, train, 1.0, extra={"levers": levers} if levers else {},
                       higher_is_better=higher)


def test_a_lever_is_priced_at_its_full_cost_per_size_and_the_sweep_pays_a_cache_once():
    # synthetic generation covers the documents without a labeled query: it costs less as labels grow
    pts = [_p(10, 0, 0.3, levers={"synthetic_seconds": 100.0, "synthetic_cached": False}),
           _p(10, 1, 0.3, levers={"synthetic_seconds": 90.0, "synthetic_cached": False}),
           _p(40, 0, 0.5, levers={"synthetic_seconds": 60.0, "synthetic_cached": True}),
           _p(40, 1, 0.5, levers={"synthetic_seconds": 50.0, "synthetic_cached": True})]
    # a user at one size pays the full cost there, cache or not: the mean over seeds
    assert lever_cost(pts, ["synthetic"], 10) == 95.0
    assert lever_cost(pts, ["synthetic"], 40) == 55.0
    assert lever_cost(pts, ["synthetic"], 20) == 0.0  # not measured there
    # the sweep paid only where the cache did not answer (once per seed here), not 300 s
    assert sweep_lever_seconds(pts, ["synthetic"]) == 190.0
    filled = [_p(10, 0, 0.3, levers={"synthetic_seconds": 80.0, "synthetic_cached": True}),
              _p(40, 0, 0.5, levers={"synthetic_seconds": 70.0, "synthetic_cached": True})]
    assert sweep_lever_seconds(filled, ["synthetic"]) == 80.0  # an earlier run filled the cache: counted once


def test_an_uncached_lever_is_paid_per_point():
    pts = [_p(10, 0, 0.3, levers={"augment_seconds": 2.0}), _p(10, 1, 0.3, levers={"augment_seconds": 4.0}),
           _p(40, 0, 0.5, levers={"augment_seconds": 8.0})]
    assert lever_cost(pts, ["augment"], 10) == 3.0 and lever_cost(pts, ["augment"], 40) == 8.0
    assert sweep_lever_seconds(pts, ["augment"]) == 14.0
    assert lever_cost(pts, [], 10) == 0.0 and lever_cost([], ["augment"], 10) == 0.0


def test_rows_pair_seeds_against_none_and_add_the_training_difference():
    choices = parse_levers("none,synthetic:8")
    points = {
        "none": [_p(10, 0, 0.30), _p(10, 1, 0.34), _p(40, 0, 0.50), _p(40, 1, 0.50)],
        "synthetic:8": [_p(10, 0, 0.40, train=16.0, levers={"synthetic_seconds": 50.0, "synthetic_cached": True}),
                        _p(10, 1, 0.40, train=14.0, levers={"synthetic_seconds": 50.0, "synthetic_cached": True}),
                        _p(40, 0, 0.52, train=20.0, levers={"synthetic_seconds": 60.0, "synthetic_cached": True})],
    }
    rows = lever_rows(choices, points, price_per_hour=3.6)
    (none10, syn10), (_, syn40) = rows[:2], rows[2:]
    assert none10.lever == "none" and none10.gain == 0.0 and none10.extra_seconds == 0.0
    assert syn10.gain == pytest.approx(0.08)  # paired: (0.40 - 0.30 + 0.40 - 0.34) / 2
    assert syn10.gain_spread == pytest.approx(math.sqrt(2) * 0.02)  # stdev of (0.10, 0.06)
    assert syn10.lever_seconds == 50.0 and syn40.lever_seconds == 60.0  # the full cost at each size
    assert syn10.train_delta == pytest.approx(5.0) and syn10.extra_seconds == pytest.approx(55.0)
    assert syn10.money == pytest.approx(55.0 / 3600 * 3.6)
    assert syn40.n == 1 and syn40.gain_spread is None and syn40.gain == pytest.approx(0.02)
    # 0.40 on the plain curve (0.32 at 10, 0.50 at 40): t = 0.08 / 0.18 of the way in log size
    assert syn10.equivalent.how == "measured"
    assert syn10.equivalent.size == pytest.approx(10 * 4 ** (0.08 / 0.18))
    assert syn10.more_labels == pytest.approx(syn10.equivalent.size - 10)


# -- labels equivalent --------------------------------------------------------------------------------

def test_labels_equivalent_interpolates_in_log_size_between_measured_sizes():
    plain = [_p(10, 0, 0.2), _p(40, 0, 0.4)]
    assert labels_equivalent(plain, 0.3).size == pytest.approx(20.0)  # halfway in log size: sqrt(10 * 40)
    assert labels_equivalent(plain, 0.4) == Equivalent(40.0, "measured")
    assert labels_equivalent(plain, 0.1) == Equivalent(10.0, "below")  # no more than the smallest size
    assert labels_equivalent(plain, 0.5) == Equivalent(None, "beyond")  # two sizes: no forecast


def test_labels_equivalent_uses_the_running_best_of_a_noisy_curve():
    # 0.35 at 20 dips to 0.30 at 40: a value of 0.33 is reached first between 10 and 20
    plain = [_p(10, 0, 0.25), _p(20, 0, 0.35), _p(40, 0, 0.30), _p(80, 0, 0.45)]
    eq = labels_equivalent(plain, 0.33)
    assert eq.how == "measured" and 10 < eq.size < 20
    eq = labels_equivalent(plain, 0.40)  # between the best so far (0.35, flat to 40) and 0.45 at 80
    assert eq.size == pytest.approx(40 * 2 ** ((0.40 - 0.35) / (0.45 - 0.35)))


def test_labels_equivalent_for_a_lower_is_better_metric():
    plain = [_p(10, 0, 0.4, higher=False, before=0.5), _p(40, 0, 0.2, higher=False, before=0.5)]
    assert labels_equivalent(plain, 0.3).size == pytest.approx(20.0)  # an error rate falling from 0.4 to 0.2
    assert labels_equivalent(plain, 0.45).how == "below"


def test_labels_equivalent_beyond_the_grid_comes_from_the_forecast():
    # m(N) = 0.8 - 0.6 N^-0.5 (pow3), three seeds each: 0.65 is reached at N = (0.6 / 0.15)^2 = 16;
    # measured up to 9 only
    plain = [_p(n, s, 0.8 - 0.6 * n ** -0.5 + e) for n in (1, 2, 4, 9) for s, e in enumerate((-0.002, 0.0, 0.002))]
    eq = labels_equivalent(plain, 0.65)
    assert eq.how == "forecast" and eq.size == pytest.approx(16, rel=0.25) and eq.low <= eq.size <= eq.high
    assert labels_equivalent(plain, 0.95).how == "unreachable"  # above the fitted asymptote (0.8)


# -- words ---------------------------------------------------------------------------------------------

def _row(gain, spread=None, *, eq=Equivalent(300.0, "measured"), money=0.17, extra=240.0, lever=230.0):
    return LeverRow("synthetic:800", "800 synthetic queries", "generation", 100, 3, 0.5, 0.01, gain, spread, lever,
                    extra - lever, extra, money, eq, None if eq.size is None else eq.size - 100)


def test_words_when_the_lever_pays():
    kw = {"metric": "mrr@20", "unit": "pairs", "scale": 100.0, "price_per_hour": 2.5}
    text = lever_sentence(_row(0.06, 0.01), **kw, price_per_label=0.5)
    assert text == ("At 100 pairs, 800 synthetic queries gained +6.0 points of mrr@20 (± 1.0 over 3 seeds) for 4.0 minutes "
                    "(3.8 minutes generation + 10 s more training; ≈ 0.17 at 2.5/hour), as much as 200 more labeled pairs "
                    "buy (the plain curve reaches it at about 300): cheaper than labeling them (100.00 at 0.5 each).")
    assert "dearer than labeling them (0.020 at 0.0001 each)" in lever_sentence(_row(0.06), **kw, price_per_label=0.0001)
    # no label price: the price per label at which labeling would be as cheap (0.17 / 200)
    assert lever_sentence(_row(0.06), **kw).endswith("cheaper than labeling them unless a label costs under 0.00085.")
    assert "(one seed: no spread measured)" in lever_sentence(_row(0.06), **kw)
    fc = lever_sentence(_row(0.06, eq=Equivalent(900.0, "forecast", 500.0, 2000.0)), **kw)
    assert "reaches it at about 900, forecast, 500 to 2,000" in fc and "800 more labeled pairs" in fc


def test_words_when_the_lever_does_not_pay():
    kw = {"metric": "mrr@20", "unit": "pairs", "scale": 100.0, "price_per_hour": None}
    lost = lever_sentence(_row(-0.012, 0.02, money=None), **kw)
    assert lost.startswith("At 100 pairs, 800 synthetic queries lost 1.2 points of mrr@20 (± 2.0 over 3 seeds) for 4.0 minutes")
    assert lost.endswith("not worth it at this size.")
    noise = lever_sentence(_row(0.01, 0.02, money=None), **kw)
    assert "within the seed spread (± 2.0 over 3 seeds): no clear gain" in noise
    assert "more than any number of labels reach" in lever_sentence(_row(0.06, eq=Equivalent(None, "unreachable"), money=None), **kw)
    assert "measure larger sizes" in lever_sentence(_row(0.06, eq=Equivalent(None, "beyond"), money=None), **kw)


# -- end to end with a fake lever ---------------------------------------------------------------------

@pytest.fixture()
def fake_lever(monkeypatch):
    """A lever 'fake' that raises the learning rate and reports 7 s of (cached) work at every point."""
    import tunewise.data.training_rows as rows

    lever = Lever("fake", "a fake lever for tests", overrides=lambda n: [f"train.learning_rate={(n or 2) / 1000}"],
                  accepts=lambda spec: True, needs="any task", argument="thousandths of the learning rate",
                  cost_key="fake", work="faking", describe=lambda n: "the fake lever")
    monkeypatch.setitem(LEVERS._items, "fake", lever)
    original = rows.search_rows

    def search_rows(train, data, config, model=None):
        out, report = original(train, data, config, model)
        if config.train.learning_rate > 1.5e-3:
            report = {**report, "fake_seconds": 7.0, "fake_cached": True}
        return out, report

    monkeypatch.setattr(rows, "search_rows", search_rows)
    return lever


@pytest.fixture()
def config(tiny_st_model, pairs_file) -> dict:
    return {"model": tiny_st_model, "data": {"train": str(pairs_file)}, "seed": 3,
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_lever_sweep_end_to_end_and_resumed(fake_lever, config, tmp_path):
    from tunewise.budget.levers import run_levers

    out = tmp_path / "budget"
    result = run_levers(config, levers="fake", sizes=[6, 12], seeds=1, output_dir=out, price_per_hour=3.6,
                        time_sweep=False)
    assert list(result.results) == ["none", "fake"]
    assert (out / "results.jsonl").exists() and (out / "levers" / "fake" / "results.jsonl").exists()
    none_before = result.results["none"].metric_before
    assert result.results["fake"].metric_before == pytest.approx(none_before)  # the same evaluation set
    fake_rows = [r for r in result.rows if r.lever == "fake"]
    assert [r.size for r in fake_rows] == [6, 12]
    assert all(r.lever_seconds == 7.0 for r in fake_rows)  # carried from TrainStats.details into the points
    points = result.results["fake"].points
    assert all(p.extra["levers"] == {"fake_seconds": 7.0, "fake_cached": True} for p in points)
    assert len(result.words) == 2 and all(w.startswith(f"At {s} pairs, the fake lever") for w, s in zip(result.words, (6, 12)))
    saved = json.loads((out / "levers.json").read_text(encoding="utf-8"))
    assert saved["levers"] == ["none", "fake"] and len(saved["rows"]) == 4 and saved["words"] == result.words
    assert saved["cost"]["fake"]["lever_seconds"] == 7.0  # cached: paid once by the sweep, not 2 x 7
    md = (out / "levers.md").read_text(encoding="utf-8")
    assert "## 12 labeled pairs" in md and "| fake |" in md and (out / "levers.png").stat().st_size > 0
    stored = [(out / "results.jsonl").read_text(), (out / "levers" / "fake" / "results.jsonl").read_text()]
    # the same sweep from the command line: every lever resumes from its own store (nothing trains), --json prints levers.json
    from tunewise.cli.app import app

    cli = runner.invoke(app, ["budget", "--model", config["model"], "--train", config["data"]["train"], "--seed", "3",
                              "--batch-size", "8", "--lr", "0.001", "--set", "train.epochs=1", "-o", str(out),
                              "--sizes", "6,12", "--seeds", "1", "--no-time", "--levers", "none,fake", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["levers"] == ["none", "fake"]
    assert stored == [(out / "results.jsonl").read_text(), (out / "levers" / "fake" / "results.jsonl").read_text()]


def test_bad_levers_on_the_command_line_exit_2_before_any_training(config, tmp_path):
    from tunewise.cli.app import app

    base = ["budget", "--model", config["model"], "--train", config["data"]["train"], "-o", str(tmp_path / "o"),
            "--sizes", "6,12,24"]
    for extra, message in ((["--levers", "hard-negative"], "error: --levers: unknown lever 'hard-negative' (did you mean"),
                           (["--levers", "synthetic:0"], "error: --levers: in 'synthetic:0'"),
                           (["--levers", "augment", "--folds", "3"], "error: --levers: not with --folds"),
                           (["--price-per-label", "0.5"], "error: --price-per-label: prices the levers"),
                           (["--levers", "augment", "--price-per-label", "-1"], "error: --price-per-label: must be")):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(message), result.output
        assert not (tmp_path / "o").exists()


def test_a_lever_the_config_refuses_fails_before_training(config, tmp_path):
    from tunewise.budget.levers import run_levers

    classify = {**config, "task": "classification", "data": {**config["data"], "columns": {"text": "query", "label": "label"}}}
    with pytest.raises(TunewiseError, match="--levers: hard-negatives does not apply to task"):
        run_levers(classify, levers="hard-negatives", sizes=[6, 12], seeds=1, output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_report_files_and_console_from_finished_sweeps(tmp_path):
    from rich.console import Console

    from tunewise.budget.lever_report import build_lever_result, show_levers

    def swept(name, points):
        return SimpleNamespace(points=points, metric="mrr@20", higher_is_better=True, metric_before=0.2,
                               output_dir=tmp_path / name, cost={"train_seconds": 40.0, "eval_seconds": 4.0})

    choices = parse_levers("none,synthetic:8")
    levers = {"synthetic_seconds": 120.0, "synthetic_cached": True}
    results = {"none": swept("none", [_p(10, 0, 0.30), _p(20, 0, 0.36), _p(40, 0, 0.45)]),
               "synthetic:8": swept("syn", [_p(10, 0, 0.36, levers=levers), _p(20, 0, 0.37, levers=levers),
                                            _p(40, 0, 0.44, levers=levers)])}
    result = build_lever_result(tmp_path, choices, results, unit="pairs", price_per_hour=2.0, price_per_label=0.05)
    assert [w.split(",")[0] for w in result.words] == ["At 10 pairs", "At 20 pairs", "At 40 pairs"]
    # +6 points at 10 pairs: what the plain curve reaches at 20 pairs, 10 more labels (0.50) for 120 s (0.067)
    assert "as much as 10 more labeled pairs buy" in result.words[0] and "cheaper than labeling them (0.50" in result.words[0]
    assert "lost 1.0 points" in result.words[2]
    assert result.cost["synthetic:8"]["lever_seconds"] == 120.0  # cached: once for the sweep
    assert {p.name for p in tmp_path.iterdir()} >= {"levers.md", "levers.json", "levers.png"}
    console = Console(record=True, width=200)
    show_levers(result, console)
    text = console.export_text()
    assert "levers at 10 labeled pairs (mrr@20)" in text and "synthetic:8" in text and "At 40 pairs" in text
