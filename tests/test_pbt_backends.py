"""Population backends: results, a raising segment, and a worker that kills itself (LocalBackend)."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from pbt_tasks import RaisingTask, SelfKillTask, WriteFileTask

from lifelong.population.backends import LocalBackend, make_backend
from lifelong.population.tasks import SegmentResult

# Seconds; a lost worker must surface as an error well before this, never as a hang. Generous because
# the first Ray task starts a worker process that imports torch: on a loaded 2-core machine that took
# over 60 s once.
TIMEOUT = 180


@pytest.fixture(scope="module")
def backend():
    # Spawned workers get this process's sys.path, where pytest has put tests/ (so `pbt_tasks` imports there).
    b = LocalBackend(workers=2)
    yield b
    b.close()


def check_results(backend, root: Path) -> None:
    futures = [backend.submit(WriteFileTask(), str(root / f"m{i}"), i, {"x": 0.5}, 10 * (i + 1)) for i in range(3)]
    for i, future in enumerate(futures):
        result = future.result(timeout=TIMEOUT)
        assert isinstance(result, SegmentResult)
        assert (result.step, result.score) == (10 * (i + 1), i + 0.5)
        written = json.loads(Path(result.checkpoint).read_text())
        assert written == {"member": i, "hparams": {"x": 0.5}, "until": 10 * (i + 1), "pid": written["pid"]}
        assert Path(result.checkpoint).parent == root / f"m{i}"
        assert written["pid"] != os.getpid()  # ran in a worker
        assert (root / f"m{i}" / "segments.log").is_file()


def test_local_backend_returns_segment_results(backend, tmp_path):
    check_results(backend, tmp_path)


def test_local_backend_raising_segment_raises_from_result(backend, tmp_path):
    future = backend.submit(RaisingTask(), str(tmp_path / "m0"), 7, {}, 10)
    with pytest.raises(ValueError, match="member 7 failed on purpose"):
        future.result(timeout=TIMEOUT)
    check_results(backend, tmp_path / "after")  # the pool is still usable


def test_local_backend_killed_worker_raises_and_restart_recovers(backend, tmp_path):
    future = backend.submit(SelfKillTask(), str(tmp_path / "dead"), 0, {}, 10)
    with pytest.raises(BrokenProcessPool):
        future.result(timeout=TIMEOUT)
    backend.restart()
    check_results(backend, tmp_path / "after")


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    from lifelong.config import ConfigError

    with pytest.raises(ConfigError) as info:  # the CLI prints ConfigErrors as one line
        make_backend("ray", 2)
    assert str(info.value) == "pbt.backend=ray needs Ray: pip install 'lifelong[ray]'"
