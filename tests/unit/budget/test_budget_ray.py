"""The Ray backend on a local Ray instance: self-contained point tasks, same numbers as local."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

from tunewise.budget import run_budget  # noqa: E402
from tunewise.budget.backends import RayBackend, run_job_from_config  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def config(tiny_st_model, tmp_path_factory) -> dict:
    from conftest import make_pairs

    path = tmp_path_factory.mktemp("ray-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(60)), encoding="utf-8")
    return {"model": tiny_st_model, "data": {"train": str(path)}, "seed": 5,
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}


def test_ray_sweep_runs_points_as_tasks_and_matches_local(local_ray, config, tmp_path):
    result = run_budget(config, sizes=[6, 12, 24], seeds=2, epochs=2, backend="ray", output_dir=tmp_path / "ray")
    assert result.backend == "ray" and result.ran == 7  # 3 sizes x 2 seeds + the time run
    data = {(p.size, p.seed): p for p in result.points if p.kind == "data"}
    assert sorted(data) == [(s, k) for s in (6, 12, 24) for k in range(2)]
    assert [p.epoch for p in result.points if p.kind == "time"] == [1.0, 2.0]
    assert result.report_path.is_file() and result.forecast is not None
    assert ray.is_initialized()  # a Ray the caller started is left running

    # The same job run in this process (rebuilt from the config dict, as a worker does)
    # gives the same metric: the worker saw the same split, subset and seeds.
    from tunewise.budget.grid import nested_subsets
    from tunewise.budget.plan import PointJob
    from tunewise.run import as_config

    cfg = as_config(config)
    indices = nested_subsets(48, [12], cfg.seed + 1)[12]
    local = run_job_from_config(cfg.to_dict(), PointJob("data", 12, 1, tuple(indices)), result.metric_before)
    assert local[0]["metric_after"] == pytest.approx(data[(12, 1)].metric_after, abs=1e-4)


def test_ray_backend_resumes_from_the_store(local_ray, config, tmp_path):
    out = tmp_path / "resume"
    first = run_budget(config, sizes=[6, 12, 24], seeds=1, time_sweep=False, backend=RayBackend(), output_dir=out)
    again = run_budget(config, sizes=[6, 12, 24], seeds=2, time_sweep=False, backend="ray", output_dir=out)
    assert (first.ran, again.ran, again.reused) == (3, 3, 3)  # a grown grid reuses finished points
