"""RayBackend on a private local Ray instance: results, a raising segment, a worker that kills itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from pbt_tasks import RaisingTask, SelfKillTask  # noqa: E402
from test_pbt_backends import TIMEOUT, check_results  # noqa: E402

from lifelong.population.ray_backend import RayBackend  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def backend():
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    # Ray workers do not inherit the driver's sys.path: put tests/ (for `pbt_tasks`) on theirs.
    pythonpath = os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)
    b = RayBackend(workers=2, address=None, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield b
    b.close()
    assert not ray.is_initialized()  # the backend shuts down the instance it started


def test_ray_backend_returns_segment_results(backend, tmp_path):
    assert backend.name == "ray"
    check_results(backend, tmp_path)


def test_ray_backend_raising_segment_raises_the_task_error(backend, tmp_path):
    future = backend.submit(RaisingTask(), str(tmp_path / "m0"), 7, {}, 10)
    with pytest.raises(ValueError, match="member 7 failed on purpose") as info:
        future.result(timeout=TIMEOUT)
    assert type(info.value) is ValueError  # unwrapped; the remote traceback is on the chained RayTaskError
    assert isinstance(info.value.__cause__, ray.exceptions.RayTaskError)


def test_ray_backend_killed_worker_raises_and_backend_stays_usable(backend, tmp_path):
    future = backend.submit(SelfKillTask(), str(tmp_path / "dead"), 0, {}, 10)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        future.result(timeout=TIMEOUT)
    backend.restart()  # a no-op for Ray, called by the runner after a crash all the same
    check_results(backend, tmp_path / "after")


def test_ray_backend_task_module_missing_on_workers_names_the_fix(backend, tmp_path, monkeypatch):
    (tmp_path / "driver_only_tasks.py").write_text(
        "from pbt_tasks import WriteFileTask\n\nclass DriverOnlyTask(WriteFileTask):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = pytest.importorskip("driver_only_tasks")
    try:
        future = backend.submit(module.DriverOnlyTask(), str(tmp_path / "m0"), 0, {}, 10)
        with pytest.raises(ModuleNotFoundError, match="driver_only_tasks.*runtime_env"):
            future.result(timeout=TIMEOUT)
    finally:
        sys.modules.pop("driver_only_tasks", None)


@pytest.mark.parametrize("synchronous", [True, False])
def test_population_on_ray_survives_a_killed_member(backend, tmp_path, synchronous):
    from pbt_tasks import QuadraticDiesOnceTask

    from lifelong.config import Config, PBTConfig, RunConfig
    from lifelong.population import Population

    cfg = Config(run=RunConfig(total_steps=60), pbt=PBTConfig(
        population=4, ready_steps=20, synchronous=synchronous, backend="ray", workers=2,
        hyperparams={"lr": {"low": 1e-3, "high": 1.0}}))
    results = Population.create(cfg, tmp_path, QuadraticDiesOnceTask(seed=3), backend=backend, log=False).run()
    restarts = [e for e in results["events"] if e["kind"] == "restart"]
    assert [e["member"] for e in restarts] == [1]
    assert restarts[0]["error"].startswith("WorkerCrashedError")
    assert all(m["step"] == 60 for m in results["members"])


def test_population_on_ray_beats_the_fixed_population(backend, tmp_path):
    """The same noisy-quadratic population as the local-backend test, on Ray: PBT beats no-exploit."""
    from test_pbt import quadratic_config

    from lifelong.population import Population
    from lifelong.population.backends import InlineBackend
    from lifelong.population.toys import NoisyQuadraticTask

    task = NoisyQuadraticTask(seed=3)
    pbt = Population.create(quadratic_config(400), tmp_path / "pbt", task, backend=backend, log=False).run()
    fixed = Population.create(quadratic_config(400, exploit=False), tmp_path / "fixed", task,
                              backend=InlineBackend(), log=False).run()
    assert any(e["kind"] == "exploit" for e in pbt["events"])
    assert pbt["best_score"] > fixed["best_score"]
