"""Where sweep points run: in this process one after another, or as parallel Ray tasks.

Both backends take the same jobs (:class:`~tunewise.budget.plan.PointJob`) and call
``emit(point)`` for every finished point, which the sweep writes to its result store at once.

**Ray** (``--backend ray``, ``pip install "tunewise[ray]"``): each job is one Ray task that
rebuilds everything from the config dict and the subset indices (task, data, pre-trained
model, strategy), so a task can run on any node. Without an address it joins a Ray already
initialised in this process, else starts a local one. To use a cluster::

    ray start --head                       # on the head node; `ray start --address=HEAD:6379` on workers
    tunewise budget run.yaml --backend ray --ray-address auto          # on a cluster node
    tunewise budget run.yaml --backend ray --ray-address ray://HEAD:10001  # from outside (Ray Client)

Every node needs tunewise installed (or ``RAY_RUNTIME_ENV`` / a runtime_env with
``pip: [tunewise]``) and must see the data files at the config's paths (a shared file
system, or absolute paths copied to each node). ``RAY_ADDRESS`` works as usual instead of
``--ray-address``. Points of a time curve come back together when their run finishes.
Parallel points share the machine, so their training seconds are not those of a lone run.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import Any

from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError

RAY_MISSING = '--backend ray needs Ray: pip install "tunewise[ray]"'


@functools.lru_cache(maxsize=1)
def is_ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


class LocalBackend:
    """Sequential, in this process: the data is prepared once and shared by every point."""

    name = "local"

    def run(self, jobs: Sequence[Any], *, cfg, task, data, device: str, metric_before: float,
            emit: Callable[[BudgetPoint], None], job_done: Callable[[Any], None]) -> None:
        from tunewise.budget.sweep import run_job

        for job in jobs:
            run_job(task, data, cfg, job, metric_before=metric_before, device=device, emit=emit)
            job_done(job)


def run_job_from_config(config: dict[str, Any], job: Any, metric_before: float) -> list[dict[str, Any]]:
    """A self-contained job (what a Ray worker runs): rebuild task and data from the config."""
    from tunewise.budget.store import point_to_dict
    from tunewise.budget.sweep import run_job
    from tunewise.config import RunConfig, from_dict
    from tunewise.models.loading import pick_device
    from tunewise.run import quiet_libraries
    from tunewise.tasks import TASKS

    cfg = from_dict(RunConfig, config)
    quiet_libraries()
    task = TASKS.get(cfg.task)()
    data = task.prepare_data(cfg)  # seeded: the same split as the driver's
    points: list[BudgetPoint] = []
    run_job(task, data, cfg, job, metric_before=metric_before, device=pick_device(cfg.train.device),
            emit=points.append)
    return [point_to_dict(p) for p in points]


class RayBackend:
    """Points as parallel Ray tasks on a local Ray or an existing cluster.

    Args:
        address: cluster address (``auto``, ``ray://host:10001``); None joins an initialised
            Ray or starts a local one.
        num_cpus: CPUs reserved per point (Ray runs as many points at once as fit).
        num_gpus: GPUs reserved per point (fractions share a GPU).
        init_kwargs: more ``ray.init`` arguments for a local start (``num_cpus``, ...).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if not is_ray_available():
            raise TunewiseError(RAY_MISSING)
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.init_kwargs = dict(init_kwargs or {})

    def _connect(self):
        import ray

        if ray.is_initialized():
            return ray, False
        kwargs = {"log_to_driver": False, "logging_level": logging.ERROR, **self.init_kwargs}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs.setdefault("include_dashboard", False)
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise TunewiseError(f"--ray-address: cannot connect to Ray at {self.address} ({err})") from None
        return ray, True

    def run(self, jobs: Sequence[Any], *, cfg, task, data, device: str, metric_before: float,
            emit: Callable[[BudgetPoint], None], job_done: Callable[[Any], None]) -> None:
        from tunewise.budget.store import point_from_dict

        ray, started = self._connect()
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(run_job_from_config)
        config = cfg.to_dict()
        pending = {remote.remote(config, job, metric_before): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    points = ray.get(ready[0])
                except ray.exceptions.RayTaskError as err:
                    cause = err.as_instanceof_cause()
                    if isinstance(cause, TunewiseError):
                        raise TunewiseError(str(cause)) from None
                    raise
                for p in points:
                    emit(point_from_dict(p))
                job_done(job)
        except BaseException:
            for ref in pending:  # finished points are already in the store; stop the rest
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


def get_backend(backend: str | Any, *, address: str | None = None) -> Any:
    """A backend object from its name (``local`` or ``ray``), or the object itself."""
    if not isinstance(backend, str):
        return backend
    if backend == "local":
        if address:
            raise TunewiseError("--ray-address: only used with --backend ray")
        return LocalBackend()
    if backend == "ray":
        return RayBackend(address=address)
    from tunewise.errors import did_you_mean

    raise TunewiseError(f"--backend: unknown backend '{backend}'{did_you_mean(backend, ['local', 'ray'])}; "
                        "use local or ray")
