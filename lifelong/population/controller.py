"""The PBT controller: one pure, seeded decision maker shared by every backend.

Population Based Training (Jaderberg et al. 2017): members train in parallel; a member
that is *ready* (``ready_steps`` env steps since its last decision, past the burn-in)
and ranks in the bottom ``quantile`` copies the weights and hyperparameters of a random
member of the top ``quantile`` (exploit), then perturbs the copied hyperparameters
(explore): each is resampled from its prior with ``resample_probability``, otherwise
multiplied by a factor drawn from ``perturb_factors`` (a shift of log(factor) in log
space), then clamped to its bounds and rounded if it is an integer. A donor must have
a checkpoint; a recipient must trail it by at least ``min_score_gap``.

The controller never touches files or processes: it sees ``MemberState`` records and
returns ``Decision`` records, so the same decisions come out on any backend. All its
randomness comes from its own ``random.Random``, saved by ``state_dict``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from lifelong.config import HyperparamPrior, PBTConfig

Hyperparams = dict[str, float]


@dataclass
class MemberState:
    """What the controller knows of a member: hyperparameters, progress, scores, checkpoint, lineage."""

    id: int
    hparams: Hyperparams
    step: int = 0
    last_decision_step: int = 0
    scores: list[tuple[int, float]] = field(default_factory=list)
    checkpoint: str | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0

    def score(self, window: int) -> float | None:
        """Mean of the last ``window`` scores, or None before the first evaluation."""
        if not self.scores:
            return None
        recent = [s for _, s in self.scores[-window:]]
        return sum(recent) / len(recent)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, for the population checkpoint."""
        return {
            "id": self.id,
            "hparams": dict(self.hparams),
            "step": self.step,
            "last_decision_step": self.last_decision_step,
            "scores": [list(s) for s in self.scores],
            "checkpoint": self.checkpoint,
            "lineage": [dict(e) for e in self.lineage],
            "restarts": self.restarts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemberState":
        """Inverse of ``to_dict``."""
        return cls(
            id=int(data["id"]),
            hparams=dict(data["hparams"]),
            step=int(data["step"]),
            last_decision_step=int(data["last_decision_step"]),
            scores=[(int(s), float(v)) for s, v in data["scores"]],
            checkpoint=data["checkpoint"],
            lineage=[dict(e) for e in data["lineage"]],
            restarts=int(data["restarts"]),
        )


@dataclass(frozen=True)
class Decision:
    """Exploit-and-explore for one member: copy ``donor``'s weights, then train with ``hparams``."""

    member: int
    donor: int
    hparams: Hyperparams
    previous: Hyperparams
    step: int


class PBTController:
    """Ready criterion, truncation selection and exploration (see module docstring)."""

    def __init__(self, cfg: PBTConfig) -> None:
        self.cfg = cfg
        self.priors = {key: HyperparamPrior.from_config(f"pbt.hyperparams.{key}", spec)
                       for key, spec in cfg.hyperparams.items()}
        self.rng = random.Random(cfg.seed)

    # ---------------------------------------------------------------- priors
    def sample(self, key: str) -> float:
        """A draw from the prior of ``key`` (log-uniform or uniform), rounded for integers."""
        prior = self.priors[key]
        if prior.scale == "log":
            value = math.exp(self.rng.uniform(math.log(prior.low), math.log(prior.high)))
        else:
            value = self.rng.uniform(prior.low, prior.high)
        return self.clamp(key, value)

    def clamp(self, key: str, value: float) -> float:
        """``value`` inside the bounds of ``key``; integers rounded to the nearest (never truncated)."""
        prior = self.priors[key]
        value = min(max(value, prior.low), prior.high)
        if prior.integer:
            value = int(round(value))
            value = min(max(value, math.ceil(prior.low)), math.floor(prior.high))
        return value

    def initial_hparams(self, base: Hyperparams) -> list[Hyperparams]:
        """Starting hyperparameters per member: ``base`` for all, or draws from the priors."""
        members = []
        for _ in range(self.cfg.population):
            if self.cfg.initial == "config":
                members.append({k: self.clamp(k, float(base[k])) for k in self.priors})
            else:
                members.append({k: self.sample(k) for k in self.priors})
        return members

    def explore(self, hparams: Hyperparams) -> Hyperparams:
        """Perturb or resample every hyperparameter of ``hparams`` (keys in config order)."""
        out = {}
        for key in self.priors:
            if self.rng.random() < self.cfg.resample_probability:
                out[key] = self.sample(key)
                continue
            factor = self.rng.choice(self.cfg.perturb_factors)
            value = float(hparams[key])
            if self.priors[key].scale == "log":
                value = math.exp(math.log(value) + math.log(factor))
            else:
                value = value * factor
            out[key] = self.clamp(key, value)
        return out

    # -------------------------------------------------------------- decisions
    def ready(self, member: MemberState) -> bool:
        """Trained ``ready_steps`` since its last decision, past the burn-in, and evaluated."""
        return (
            member.step - member.last_decision_step >= self.cfg.ready_steps
            and member.step >= self.cfg.burn_in_steps
            and bool(member.scores)
        )

    def decide(self, members: list[MemberState], candidates: list[int] | None = None) -> list[Decision]:
        """Exploit/explore decisions for the ready members among ``candidates`` (default: all).

        Ranking uses every member with a score; the bottom and top sets each hold
        ``ceil(quantile * n)`` members. Ready candidates in the bottom set copy a random
        top member that has a checkpoint and beats them by more than ``min_score_gap``.
        Every ready candidate's ``last_decision_step`` is advanced, exploited or not.
        """
        window = self.cfg.score_window
        scored = [m for m in members if m.score(window) is not None]
        # Ties are broken by member id so the ranking is deterministic.
        ranked = sorted(scored, key=lambda m: (m.score(window), -m.id))
        cut = max(1, math.ceil(self.cfg.quantile * len(ranked))) if len(ranked) >= 2 else 0
        bottom = {m.id for m in ranked[:cut]}
        top = [m for m in ranked[len(ranked) - cut:] if m.checkpoint is not None] if cut else []
        wanted = set(candidates) if candidates is not None else {m.id for m in members}
        decisions = []
        for member in sorted(members, key=lambda m: m.id):
            if member.id not in wanted or not self.ready(member):
                continue
            member.last_decision_step = member.step
            if member.id not in bottom:
                continue
            own = member.score(window)
            # Truncation selection: equal scores still exploit (as in the paper), unless a gap is asked for.
            donors = [d for d in top if d.id != member.id and d.score(window) - own >= self.cfg.min_score_gap]
            if not donors:
                continue
            donor = self.rng.choice(donors)
            decisions.append(Decision(member.id, donor.id, self.explore(donor.hparams), dict(member.hparams),
                                      member.step))
        return decisions

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The RNG state as plain containers."""
        version, internal, gauss = self.rng.getstate()
        return {"version": version, "internal": list(internal), "gauss": gauss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the RNG so decisions continue exactly."""
        self.rng.setstate((state["version"], tuple(state["internal"]), state["gauss"]))
