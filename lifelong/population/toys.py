"""Small PBT problems with known answers, as member tasks: the paper's toy and a noisy quadratic.

Both keep a member's parameters in ``<member_dir>/state.pt`` (a checkpoint holding
``step`` and ``theta``), so they run under the same controller, runner and backends as
RL members and exercise exploit (copy ``theta``) and explore (mutate hyperparameters).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from lifelong.checkpoint import load_checkpoint, save_checkpoint
from lifelong.population.tasks import MemberTask, SegmentResult

STATE = "state.pt"


def _load(member_dir: str, theta0: torch.Tensor) -> tuple[int, torch.Tensor]:
    path = Path(member_dir) / STATE
    if not path.exists():
        return 0, theta0.clone()
    state = load_checkpoint(path)
    return int(state["step"]), state["theta"]


def _save(member_dir: str, step: int, theta: torch.Tensor) -> str:
    path = Path(member_dir) / STATE
    save_checkpoint(path, {"step": step, "theta": theta})
    return str(path)


def _transplant(donor_dir: str, member_dir: str) -> str:
    donor = load_checkpoint(Path(donor_dir) / STATE)
    step, _ = _load(member_dir, donor["theta"])
    return _save(member_dir, step, donor["theta"].clone())


class PaperToyTask(MemberTask):
    """Jaderberg et al.'s toy: maximise Q = 1.2 - |theta|^2 by gradient ascent on the surrogate
    Q_hat = 1.2 - (h0 theta0^2 + h1 theta1^2); hyperparameters ``h0``, ``h1``; lr 0.01; theta0 = [0.9, 0.9]."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    @staticmethod
    def objective(theta: torch.Tensor) -> float:
        """The true objective Q (the score)."""
        return 1.2 - float((theta**2).sum())

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Gradient steps on the surrogate until ``until``."""
        started = time.perf_counter()
        step, theta = _load(member_dir, torch.tensor([0.9, 0.9], dtype=torch.float64))
        h = torch.tensor([hparams["h0"], hparams["h1"]], dtype=torch.float64)
        while step < until:
            theta = theta + self.lr * (-2.0 * h * theta)  # ascent on Q_hat
            step += 1
        path = _save(member_dir, step, theta)
        return SegmentResult(step, self.objective(theta), path, time.perf_counter() - started)

    def transplant(self, donor_dir: str, member_dir: str) -> str:
        """Copy the donor's theta."""
        return _transplant(donor_dir, member_dir)


class NoisyQuadraticTask(MemberTask):
    """SGD on a 10-D ill-conditioned quadratic with noisy gradients; hyperparameter ``lr``.

    Loss ``0.5 * sum_i c_i theta_i^2`` with curvatures ``c_i`` log-spaced in [0.01, 1] and
    gradient noise ``N(0, sigma^2 c_i)``: a large learning rate makes fast early progress,
    a small one reaches a lower noise floor, so a schedule beats every fixed value.
    The score is minus the loss; every member starts from the same ``theta``.
    """

    def __init__(self, dim: int = 10, sigma: float = 1.0, seed: int = 0) -> None:
        self.dim, self.sigma, self.seed = dim, sigma, seed
        self.curvature = torch.logspace(-2, 0, dim, dtype=torch.float64)

    def loss(self, theta: torch.Tensor) -> float:
        """The quadratic loss."""
        return 0.5 * float((self.curvature * theta**2).sum())

    def run_segment(self, member_dir: str, member_id: int, hparams: dict[str, float], until: int) -> SegmentResult:
        """Noisy SGD steps until ``until``; the noise stream depends on (seed, member, step)."""
        started = time.perf_counter()
        step, theta = _load(member_dir, torch.full((self.dim,), 3.0, dtype=torch.float64))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + member_id * 10_007 + step)
        lr = float(hparams["lr"])
        while step < until:
            noise = torch.randn(self.dim, generator=gen, dtype=torch.float64) * self.sigma * self.curvature.sqrt()
            theta = theta - lr * (self.curvature * theta + noise)
            step += 1
        path = _save(member_dir, step, theta)
        score = -self.loss(theta)
        return SegmentResult(step, score if math.isfinite(score) else -1e30, path, time.perf_counter() - started)

    def transplant(self, donor_dir: str, member_dir: str) -> str:
        """Copy the donor's theta."""
        return _transplant(donor_dir, member_dir)
