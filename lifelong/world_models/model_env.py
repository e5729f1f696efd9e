"""``ModelEnv``: batched rollouts of a learned (or known) dynamics model with a policy or action plans.

Dynamics are any callable ``(obs [N, O], action [N, A]) -> (next_obs [N, O], reward [N] or None)``,
e.g. ``GaussianEnsemble.step`` (one TS1 draw per row) or a known simulator. A known
``reward_fn(obs, action, next_obs) -> [N]`` replaces the model's reward, and
``termination_fn(obs, action, next_obs) -> bool [N]`` ends rows early: after a row
terminates its later rewards are masked out (``alive``), as in MBPO's model rollouts.
"""

from __future__ import annotations

from typing import Callable

import torch

Dynamics = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ObsPolicy = Callable[[torch.Tensor], torch.Tensor]


class ModelEnv:
    """Rolls ``dynamics`` for H steps over N rows at once, with optional known reward and termination."""

    def __init__(self, dynamics: Dynamics, reward_fn: RewardFn | None = None,
                 termination_fn: TerminationFn | None = None) -> None:
        self.dynamics = dynamics
        self.reward_fn = reward_fn
        self.termination_fn = termination_fn

    def step(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(next_obs [N, O], reward [N], terminated [N] bool)`` of one batched step."""
        next_obs, reward = self.dynamics(obs, action)
        if self.reward_fn is not None:
            reward = self.reward_fn(obs, action, next_obs)
        if reward is None:
            raise ValueError("ModelEnv: the dynamics predict no reward and no reward_fn was given")
        if self.termination_fn is not None:
            terminated = self.termination_fn(obs, action, next_obs).bool()
        else:
            terminated = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        return next_obs, reward, terminated

    def rollout(
        self,
        obs: torch.Tensor,
        horizon: int | None = None,
        policy: ObsPolicy | None = None,
        actions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Roll ``horizon`` steps from ``obs [N, O]`` with ``policy(obs)`` or the given ``actions [H, N, A]``.

        Returns ``obs [H+1, N, O]``, ``action [H, N, A]``, ``reward [H, N]`` (zero after a
        termination), ``terminated [H, N]`` and ``alive [H, N]`` (1 where the step was taken
        before any termination of its row).
        """
        if (policy is None) == (actions is None):
            raise ValueError("ModelEnv.rollout: give exactly one of policy and actions")
        steps = actions.shape[0] if actions is not None else horizon
        if steps is None:
            raise ValueError("ModelEnv.rollout: horizon is required with a policy")
        alive = torch.ones(obs.shape[0], dtype=obs.dtype, device=obs.device)
        observations, taken, rewards, terminals, alives = [obs], [], [], [], []
        for k in range(steps):
            action = actions[k] if actions is not None else policy(obs)
            obs, reward, terminated = self.step(obs, action)
            alives.append(alive)
            rewards.append(reward * alive)
            terminals.append(terminated)
            alive = alive * (~terminated).to(alive.dtype)
            observations.append(obs)
            taken.append(action)
        return {"obs": torch.stack(observations), "action": torch.stack(taken), "reward": torch.stack(rewards),
                "terminated": torch.stack(terminals), "alive": torch.stack(alives)}

    def evaluate_plans(self, obs: torch.Tensor, plans: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
        """Discounted return ``[B, P]`` of every action plan ``plans [B, P, H, A]`` from its env's ``obs [B, O]``."""
        batch, population, horizon, _ = plans.shape
        start = obs.unsqueeze(1).expand(batch, population, *obs.shape[1:]).reshape(batch * population, *obs.shape[1:])
        actions = plans.reshape(batch * population, horizon, -1).transpose(0, 1)
        rewards = self.rollout(start, actions=actions)["reward"]
        discounts = gamma ** torch.arange(horizon, device=rewards.device, dtype=rewards.dtype)
        return (rewards * discounts[:, None]).sum(0).view(batch, population)
