"""What a population member does: train for a segment, report a score, lend its weights.

A ``MemberTask`` is picklable and stateless: everything lives in the member's
directory, so a segment can run in any worker process (local or Ray) and a crashed
segment is simply run again from the member's last checkpoint. ``RLTask`` trains the
platform's agents through the ordinary run machinery (each member is a normal run dir
with its own TensorBoard curves); other tasks (the benchmark's noisy quadratic, the
paper's toy) implement the same three methods.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.checkpoint import CheckpointDir, CheckpointError, save_checkpoint


@dataclass
class SegmentResult:
    """The outcome of one segment: the step reached, the score there, the newest checkpoint."""

    step: int
    score: float
    checkpoint: str
    seconds: float


class MemberTask(ABC):
    """One member's training between PBT decisions; implementations must be picklable."""

    @abstractmethod
    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Train the member (fresh, or from its newest checkpoint) with ``hparams`` until env step ``until``."""

    @abstractmethod
    def transplant(self, donor_dir: str, member_dir: str) -> str:
        """Exploit: make the member continue from the donor's weights and optimizer; return the checkpoint written."""


def _format_override(key: str, value: float) -> str:
    return f"{key}={value!r}"  # repr round-trips ints and floats (1e-05 reads back as a float)


class RLTask(MemberTask):
    """Members are ordinary runs of the platform: ``lifelong.run.train`` with ``until`` per segment.

    ``config`` is the resolved config as plain containers; member ``i`` gets
    ``run.seed + i``, no progress bar, and the hyperparameters of its current decision
    as dotted overrides (applied after the optimizer state loads, so a mutated learning
    rate is the one that trains).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)
        self.config["pbt"] = None

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Start or resume the member's run and train it to ``until``; the score is its evaluation there."""
        from lifelong.config import apply_override, config_from_dict
        from lifelong.run import train

        started = time.perf_counter()
        overrides = [_format_override(k, v) for k, v in hparams.items()]
        path = Path(member_dir)
        if CheckpointDir(path / "checkpoints").paths():
            results = train(resume=path, overrides=overrides, until=until)
        else:
            raw = copy.deepcopy(self.config)
            raw["run"]["seed"] = int(raw["run"].get("seed", 0)) + member_id
            raw["run"]["name"] = f"{raw['run'].get('name', 'run')}-member{member_id}"
            raw["run"]["progress"] = False
            for key, value in hparams.items():
                apply_override(raw, key.split("."), value)
            if path.exists() and (path / "config.yaml").exists():
                (path / "config.yaml").unlink()  # a member that crashed before its first checkpoint starts over
            results = train(config_from_dict(raw), path, until=until)
        final = results["final_eval"]
        checkpoint = CheckpointDir(path / "checkpoints").paths()[-1]
        return SegmentResult(int(results["steps"]), float(final["mean"]), str(checkpoint),
                             time.perf_counter() - started)

    def transplant(self, donor_dir: str, member_dir: str) -> str:
        """Write a checkpoint at the member's step holding the donor's trainer state (weights, optimizer,
        normalisers) and the member's own step, evaluations, RNG streams and wall time."""
        donor = _latest(Path(donor_dir))
        own_dir = CheckpointDir(Path(member_dir) / "checkpoints")
        mine = own_dir.latest()
        if mine is None:
            raise CheckpointError(f"{member_dir}: no checkpoint to exploit into")
        path, payload = mine
        payload["trainer"] = donor["trainer"]
        payload["exploited_from"] = {"dir": str(donor_dir), "step": int(donor["step"])}
        # Atomic replace of the member's newest checkpoint: a reader sees the old or the new file, whole.
        save_checkpoint(path, payload)
        return str(path)


def _latest(run_dir: Path, attempts: int = 3) -> dict[str, Any]:
    """The newest good checkpoint of ``run_dir``, retried if a concurrent prune removes it mid-read."""
    last_error: Exception | None = None
    for _ in range(attempts):
        try:
            found = CheckpointDir(run_dir / "checkpoints").latest()
        except OSError as e:  # removed between listing and reading
            last_error = e
            continue
        if found is not None:
            return found[1]
        last_error = CheckpointError(f"{run_dir}: no checkpoint")
    raise CheckpointError(f"{run_dir}: cannot read a checkpoint to exploit ({last_error})")
