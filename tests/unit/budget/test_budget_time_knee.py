"""``--time-size knee`` (the default): the time curve runs at the size the data sweep recommends,
after the data points are in, so "N items and E epochs (about S s of training)" is measured at N.

The points come from a scripted backend (a learning curve whose knee is at 24 items), so the
recommended size is known; the sweep around it (the pre-trained evaluation, the store, resume,
the report) is the real one on a tiny random model.
"""

from __future__ import annotations

import gc
import json

import pytest

from tunewise.budget import run_budget
from tunewise.budget.advice import recommend
from tunewise.budget.plan import plan_sweep
from tunewise.budget.roi import BudgetPoint, summarize_points
from tunewise.config import load_config
from tunewise.errors import TunewiseError

SIZES = [6, 12, 24, 48]
GAIN = {6: 0.60, 12: 0.68, 24: 0.70, 48: 0.72}  # relative improvement: ROI at 24 is under 30% of its peak


class ScriptedRunner:
    """A backend whose points follow :data:`GAIN` (data) and a curve in epochs (time)."""

    name = "scripted"

    def __init__(self) -> None:
        self.jobs: list = []
        self.frozen: list[int] = []  # gc.get_freeze_count() while each job runs

    def run(self, jobs, *, cfg, task, data, device, metric_before, emit, job_done) -> None:
        for job in jobs:
            self.jobs.append(job)
            self.frozen.append(gc.get_freeze_count())
            if job.kind == "data":
                emit(BudgetPoint(job.size, job.seed, metric_before, metric_before * (1 + GAIN[job.size] + 0.01 * job.seed),
                                 train_seconds=job.size * 0.1, eval_seconds=1.0))
            else:
                epochs = int(job.epochs)
                for e in range(1, epochs + 1):
                    emit(BudgetPoint(job.size, job.seed, metric_before, metric_before * (2 - 0.5 ** e),
                                     train_seconds=job.size * 0.05 * e, eval_seconds=1.0, epoch=float(e), kind="time",
                                     extra={"final": e == epochs}))
            job_done(job)


@pytest.fixture(scope="module")
def config(tiny_st_model, tmp_path_factory) -> dict:
    from conftest import make_pairs

    path = tmp_path_factory.mktemp("knee-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(60)), encoding="utf-8")
    return {"model": tiny_st_model, "data": {"train": str(path)}, "seed": 3, "train": {"epochs": 1, "batch_size": 8}}


def test_plan_resolves_the_time_size_option():
    cfg = load_config(None, ["train.epochs=2"])
    default = plan_sweep(48, cfg, sizes=SIZES)
    assert default.time_at_knee and default.time_size is None and default.time_epochs == 4
    assert default.fingerprint_part()["time"]["size"] == "knee"
    assert plan_sweep(48, cfg, sizes=SIZES, time_size="largest").time_size == 48
    assert plan_sweep(48, cfg, sizes=SIZES, time_size="12").time_size == 12
    largest = plan_sweep(48, cfg, sizes=SIZES, time_from_largest=True)
    assert largest.time_size == 48 and not largest.time_at_knee  # that curve is the largest size's run
    assert plan_sweep(48, cfg, sizes=SIZES, time_sweep=False).fingerprint_part()["time"] is None
    with pytest.raises(TunewiseError, match="--time-size: knee .* drop one"):
        plan_sweep(48, cfg, sizes=SIZES, time_size="knee", time_from_largest=True)
    for bad in ("middle", "2.5", True):
        with pytest.raises(TunewiseError, match="--time-size: expected a number of items, knee or largest"):
            plan_sweep(48, cfg, sizes=SIZES, time_size=bad)


def test_the_time_curve_runs_at_the_recommended_size_after_the_data(config, tmp_path):
    runner = ScriptedRunner()
    out = tmp_path / "sweep"
    result = run_budget(config, sizes=SIZES, seeds=2, backend=runner, output_dir=out)
    kinds = [j.kind for j in runner.jobs]
    assert kinds == ["data"] * 8 + ["time"]  # the time run waits for every data point
    time_job = runner.jobs[-1]
    rec_items = recommend(result.data_summary, None).items
    assert rec_items is not None and rec_items < 48  # the curve flattens: the knee is below the largest
    assert time_job.size == rec_items == result.recommendation.items
    # its items are the same nested subset as that size's seed-0 data run
    assert set(time_job.indices) == set(next(j for j in runner.jobs if j.kind == "data" and j.size == rec_items
                                             and j.seed == 0).indices)
    assert [r.size for r in result.time_summary] == [rec_items] * 2 and result.recommendation.epochs == 2
    text = result.recommendation.text
    assert f"About {rec_items} labeled items and 2 epochs (about" in text and " at 48 " not in text.split(")")[0]
    assert f"Time sweep at {rec_items} items" in text

    # what lives all sweep is frozen for the garbage collector while the points run, and thawed after
    assert all(count > 0 for count in runner.frozen) and gc.get_freeze_count() == 0

    again = ScriptedRunner()  # resume: nothing left, the same report
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    rerun = run_budget(config, sizes=SIZES, seeds=2, backend=again, output_dir=out)
    assert again.jobs == [] and rerun.reused == len(result.points)
    assert json.loads(rerun.summary_path.read_text(encoding="utf-8"))["recommendation"] == summary["recommendation"]


def test_a_resume_with_the_data_done_runs_only_the_time_curve(config, tmp_path):
    out = tmp_path / "sweep"
    run_budget(config, sizes=SIZES, seeds=2, backend=ScriptedRunner(), output_dir=out, time_sweep=True)
    store = out / "results.jsonl"
    lines = [line for line in store.read_text(encoding="utf-8").splitlines() if '"kind": "time"' not in line]
    store.write_text("\n".join(lines) + "\n", encoding="utf-8")  # as if killed before the time run
    again = ScriptedRunner()
    result = run_budget(config, sizes=SIZES, seeds=2, backend=again, output_dir=out)
    assert [(j.kind, j.size) for j in again.jobs] == [("time", result.recommendation.items)]
    assert result.reused == 8 and result.ran == 1


def test_advised_seconds_name_the_size_they_were_measured_at():
    data = summarize_points([BudgetPoint(size, 0, 0.2, 0.2 * (1 + gain), size * 0.1, 1.0)
                             for size, gain in ((25, 0.4), (50, 0.7), (100, 0.9), (200, 0.92), (400, 0.93))], "data")

    def time_rows(size: int) -> list:
        return summarize_points([BudgetPoint(size, 0, 0.2, 0.2 * (1.5 + 0.1 * e), size * 0.1 * e, 1.0, epoch=float(e),
                                             kind="time") for e in (1, 2, 3, 4)], "time")

    rec = recommend(data, time_rows(400))
    assert rec.items is not None and rec.items < 400
    assert "of training at 400 items on this machine" in rec.text  # measured at 400, not at the advised size
    same = recommend(data, time_rows(rec.items))
    assert "of training on this machine" in same.text
