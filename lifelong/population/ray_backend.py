"""Run population members' segments as Ray tasks (``pbt.backend: ray``), on a local instance or a cluster."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lifelong.population.backends import _run_segment
from lifelong.population.tasks import MemberTask, SegmentResult

INSTALL_HINT = "pbt.backend=ray needs Ray: pip install 'lifelong[ray]'"


class RayBackend:
    """At most ``workers`` members at a time, each segment a Ray task (``num_cpus=1``) running ``_run_segment``.

    ``address`` of ``None`` starts a private local Ray instance with ``workers`` CPUs
    (no dashboard, quiet driver; workers' output is in Ray's session logs,
    ``/tmp/ray/session_latest/logs``), shut down again by ``close``. An address
    (``"HOST:PORT"``, ``"auto"``, ``"ray://HOST:PORT"``) joins an existing cluster, which
    ``close`` leaves running; so does a Ray already initialised in this process.

    Concurrency is capped by the backend itself, not by the cluster: ``submit`` queues
    a segment until one of ``workers`` driver-side slots is free, so ``pbt.workers`` means
    "members trained at the same time" on a cluster of any size; each task also asks Ray
    for one CPU, so a small cluster caps it further.

    Members' run dirs are absolute paths chosen by the runner and every segment reads
    and writes its member's dir; on a multi-node cluster ``pbt.storage`` must therefore
    be a shared filesystem (NFS, a mounted bucket) reachable at the same path from every
    node, and every node needs ``lifelong`` (and the module of the member task)
    importable in the same environment. ``runtime_env`` (a Ray runtime environment, such
    as ``{"env_vars": {"PYTHONPATH": ...}}`` or ``{"working_dir": ...}``) is passed to
    ``ray.init`` for modules that only the driver has.

    Failures surface as exceptions from ``future.result()``, which the runner treats as a
    lost segment to rerun from the member's last checkpoint: an exception raised by the
    task is re-raised as itself (chained to Ray's ``RayTaskError``, which carries the
    remote traceback); a worker that dies (killed, out of memory, segfault) gives
    ``ray.exceptions.WorkerCrashedError`` (or ``OutOfMemoryError`` when Ray's memory
    monitor killed it). Ray's own task retries are off (``max_retries=0``) so that each
    crash is counted against ``pbt.max_restarts``; Ray replaces dead workers by itself.
    """

    name = "ray"

    def __init__(self, workers: int, address: str | None = None, runtime_env: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        self.workers = workers
        self.address = address
        self._ray = ray
        self._owns_instance = False
        if not ray.is_initialized():
            common: dict[str, Any] = dict(runtime_env=runtime_env, logging_level=logging.ERROR,
                                          log_to_driver=False, ignore_reinit_error=True)
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, **common)
                self._owns_instance = True
            else:
                ray.init(address=address, **common)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run_segment)
        self._slots = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ray-segment")
        self._lock = threading.Lock()
        self._running: set[Any] = set()  # ObjectRefs of segments in flight, cancelled by close()
        self._closed = False

    def submit(self, task: MemberTask, member_dir: str, member_id: int, hparams: dict, until: int) -> Future:
        """Run one segment; the future holds its ``SegmentResult`` or the segment's failure."""
        return self._slots.submit(self._run, task, member_dir, member_id, dict(hparams), until)

    def _run(self, task: MemberTask, member_dir: str, member_id: int, hparams: dict, until: int) -> SegmentResult:
        """In a slot thread: launch the Ray task and wait for it, unwrapping the task's own exception."""
        ray = self._ray
        with self._lock:
            if self._closed:
                raise RuntimeError("RayBackend is closed")
            ref = self._remote.remote(task, member_dir, member_id, hparams, until)
            self._running.add(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            inner = getattr(cause, "client_exc", None)  # RaySystemError: the arguments could not be unpickled
            if isinstance(inner, ModuleNotFoundError):
                raise ModuleNotFoundError(
                    f"Ray worker cannot import the member task ({inner}); make its module importable on every "
                    f"worker (install it, or pass runtime_env with PYTHONPATH or working_dir)"
                ) from e
            if isinstance(cause, Exception):
                raise cause from e
            raise
        finally:
            with self._lock:
                self._running.discard(ref)

    def restart(self) -> None:
        """Nothing to do: Ray replaces dead workers, and a crash loses only the segment that was running."""

    def close(self) -> None:
        """Cancel segments still queued or running; shut Ray down if this backend started it."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for ref in running:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished, or its worker is gone
                pass
        self._slots.shutdown(wait=True, cancel_futures=True)
        if self._owns_instance and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_instance = False
