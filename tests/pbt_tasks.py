"""Tiny picklable member tasks for the backend tests (a module of its own so worker processes can import it)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from lifelong.population.tasks import MemberTask, SegmentResult
from lifelong.population.toys import NoisyQuadraticTask


class _NoTransplant(MemberTask):
    def transplant(self, donor_dir: str, member_dir: str) -> str:
        """Not used by the backend tests."""
        raise NotImplementedError


class WriteFileTask(_NoTransplant):
    """Writes ``segment-<until>.json`` (member, hparams, worker pid) in the member dir; score = member id + x."""

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Write the file and report it as the checkpoint."""
        started = time.perf_counter()
        path = Path(member_dir) / f"segment-{until}.json"
        path.write_text(json.dumps({"member": member_id, "hparams": hparams, "until": until, "pid": os.getpid()}))
        return SegmentResult(until, member_id + float(hparams.get("x", 0.0)), str(path),
                             time.perf_counter() - started)


class RaisingTask(_NoTransplant):
    """Fails with a ValueError naming the member."""

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Raise."""
        raise ValueError(f"member {member_id} failed on purpose")


class SelfKillTask(_NoTransplant):
    """Kills its own worker process (as the OOM killer would)."""

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """SIGKILL the current process."""
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # not reached
        raise AssertionError("still alive after SIGKILL")


class QuadraticDiesOnceTask(NoisyQuadraticTask):
    """The benchmark's noisy quadratic, whose member 1 kills its worker the first time it runs."""

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Die once (marker file next to the member dirs), then train as usual."""
        marker = Path(member_dir).parent / "died"
        if member_id == 1 and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run_segment(member_dir, member_id, hparams, until)
