"""Cross-entropy method MPC (PETS, Chua et al. 2018), batched over candidates and envs.

Per env and decision: a Gaussian over action sequences ``[H, A]`` starts from the previous
plan shifted by one step (warm start; the new last step is the middle of the bounds) and
variance ``(high - low)^2 / 16``. Each iteration draws ``population`` sequences from a
normal truncated at 2 std whose variance is capped so that 2 std stay inside the bounds
(PETS's constrained variance), scores them all in one batched call, refits mean and variance
to the ``elites`` best and blends ``new = alpha * old + (1 - alpha) * fit``. The first action
of the final mean is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lifelong.config import setting

# (obs [B, O], plans [B, P, H, A]) -> returns [B, P]; e.g. ModelEnv.evaluate_plans.
PlanEvaluator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class CEMConfig:
    """Settings of the CEM planner (PETS defaults except the population, which PETS sets to 400-500)."""

    horizon: int = setting(15, "Planning horizon in steps.", low=1)
    population: int = setting(500, "Candidate action sequences per iteration.", low=2)
    elites: int = setting(50, "Best candidates the distribution is refitted to.", low=1)
    iterations: int = setting(5, "Refits per decision.", low=1)
    alpha: float = setting(0.1, "Weight of the old mean/variance when blending with the elites' fit.",
                           low=0.0, high=1.0)

    def validate(self, prefix: str) -> None:
        """Elites must be fewer than the population."""
        from lifelong.config import ConfigError

        if self.elites >= self.population:
            raise ConfigError(f"{prefix}elites: {self.elites} is not below population={self.population} "
                              f"(allowed: 1..{self.population - 1})")


class CEMPlanner:
    """MPC with the cross-entropy method over ``B`` envs at once; ``plan(obs)`` returns ``[B, A]`` actions."""

    def __init__(
        self,
        cfg: CEMConfig,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        evaluate: PlanEvaluator,
        generator: torch.Generator | None = None,
    ) -> None:
        if cfg.elites >= cfg.population:
            raise ValueError(f"elites {cfg.elites} must be below population {cfg.population}")
        self.cfg = cfg
        self.low = torch.as_tensor(action_low, dtype=torch.float32)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=self.low.device)
        self.evaluate = evaluate
        self.generator = generator
        self.mean: torch.Tensor | None = None  # [B, H, A] warm-start plan

    def initial_mean(self, batch: int) -> torch.Tensor:
        """The middle of the action bounds for every step: ``[B, H, A]``."""
        middle = (self.low + self.high) / 2
        return middle.expand(batch, self.cfg.horizon, -1).clone()

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget the warm-start plan of every env (or of the envs where ``mask [B]`` is True)."""
        if self.mean is None or mask is None:
            self.mean = None
            return
        self.mean = torch.where(mask[:, None, None], self.initial_mean(self.mean.shape[0]), self.mean)

    @torch.no_grad()
    def plan(self, obs: torch.Tensor) -> torch.Tensor:
        """Optimise a plan for each env in ``obs [B, ...]`` and return its first action ``[B, A]``."""
        cfg = self.cfg
        batch = obs.shape[0]
        low, high = self.low.to(obs.device), self.high.to(obs.device)
        self.low, self.high = low, high
        if self.mean is None or self.mean.shape[0] != batch:
            self.mean = self.initial_mean(batch)
        mean = self.mean
        var = ((high - low) ** 2 / 16).expand_as(mean).clone()
        for _ in range(cfg.iterations):
            # Cap the variance so that the 2-std truncation stays inside the bounds.
            room = torch.minimum(mean - low, high - mean).clamp(min=0) / 2
            std = torch.minimum(var, room.square()).sqrt()
            noise = torch.empty(batch, cfg.population, *mean.shape[1:], device=obs.device)
            torch.nn.init.trunc_normal_(noise, 0.0, 1.0, -2.0, 2.0, generator=self.generator)
            plans = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(low, high)
            returns = self.evaluate(obs, plans)
            returns = torch.nan_to_num(returns, nan=-float("inf"))
            best = returns.topk(cfg.elites, dim=1).indices
            elites = plans.gather(1, best[:, :, None, None].expand(-1, -1, *plans.shape[2:]))
            mean = cfg.alpha * mean + (1 - cfg.alpha) * elites.mean(1)
            var = cfg.alpha * var + (1 - cfg.alpha) * elites.var(1, unbiased=False)
        action = mean[:, 0].clamp(low, high)
        self.mean = torch.cat([mean[:, 1:], self.initial_mean(batch)[:, :1]], dim=1)
        return action
