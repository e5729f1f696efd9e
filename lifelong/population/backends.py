"""Where members run: local worker processes (default) or a Ray cluster; both return futures."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from lifelong.population.tasks import MemberTask, SegmentResult


def _run_segment(task: MemberTask, member_dir: str, member_id: int, hparams: dict, until: int) -> SegmentResult:
    """Run one segment in a worker; its messages go to ``<member_dir>/segments.log``, not the terminal."""
    import contextlib
    from pathlib import Path

    import torch

    torch.set_num_threads(1)  # several members share the machine's cores
    Path(member_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(member_dir) / "segments.log", "a") as log, contextlib.redirect_stderr(log):
        return task.run_segment(member_dir, member_id, hparams, until)


class InlineBackend:
    """Runs each segment at once in the calling process: for members too small to pay for a process."""

    name = "inline"

    def submit(self, task: MemberTask, member_dir: str, member_id: int, hparams: dict, until: int) -> Future:
        """Run the segment now; the returned future is already done (with its result or its error)."""
        future: Future = Future()
        try:
            future.set_result(task.run_segment(member_dir, member_id, dict(hparams), until))
        except Exception as e:  # a failed segment is reported through the future, as on other backends
            future.set_exception(e)
        return future

    def restart(self) -> None:
        """Nothing to restart."""

    def close(self) -> None:
        """Nothing to release."""


class LocalBackend:
    """At most ``workers`` members at a time, each segment in a spawned worker process.

    Workers persist between segments (imports are paid once). A worker that dies
    (killed, out of memory) breaks the pool; ``restart`` builds a new one so the
    population can rerun the lost segments from their members' last checkpoints.
    """

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, task: MemberTask, member_dir: str, member_id: int, hparams: dict, until: int) -> Future:
        """Run one segment; the future holds its ``SegmentResult``."""
        args = (_run_segment, task, member_dir, member_id, dict(hparams), until)
        try:
            return self._pool.submit(*args)
        except BrokenProcessPool:
            # A worker died while other segments were finishing: continue on a fresh pool.
            self.restart()
            return self._pool.submit(*args)

    def restart(self) -> None:
        """Replace the pool if it is broken; a healthy pool keeps its running segments."""
        if not getattr(self._pool, "_broken", True):
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_backend(name: str, workers: int, address: str | None = None) -> Any:
    """The backend named by ``pbt.backend``."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        from lifelong.config import ConfigError
        from lifelong.population.ray_backend import RayBackend

        try:
            return RayBackend(workers, address)
        except ImportError as e:  # Ray is an optional extra: say how to get it, in one line
            raise ConfigError(str(e)) from e
    raise ValueError(f"pbt.backend: {name!r} is not allowed (allowed: local, ray)")
