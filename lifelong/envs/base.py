"""The batched environment contract: time-first torch tensors and same-step autoreset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch


@dataclass
class Step:
    """One step of a batch of environments (every tensor has batch size B first).

    When an episode ends at this step, ``obs`` is already the first observation of
    the next episode, ``is_first`` is True for it, and ``final_obs`` holds the true
    last observation of the finished episode (rows where no episode ended hold
    ``obs`` unchanged so the tensor is always dense). ``reward`` and the done flags
    are the result of the action that produced this step.
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    is_first: torch.Tensor
    final_obs: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> torch.Tensor:
        """True where an episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated


class VecEnv(ABC):
    """A batch of ``num_envs`` environments stepped together, on ``device``.

    Backends implement ``reset`` and ``step``; wrappers forward to an inner env.
    Observations are float32 tensors ``[B, *obs_shape]``; actions are int64 ``[B]``
    for discrete spaces and float32 ``[B, *act_shape]`` for boxes.
    """

    num_envs: int
    observation_space: gym.Space  # space of a single env
    action_space: gym.Space  # space of a single env
    device: torch.device

    @abstractmethod
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env (seeding them from ``seed`` when given); return obs ``[B, ...]``."""

    @abstractmethod
    def step(self, action: torch.Tensor) -> Step:
        """Apply one action per env and return the resulting ``Step`` (same-step autoreset)."""

    def close(self) -> None:
        """Release backend resources (threads, subprocesses)."""

    def set_training(self, training: bool) -> None:
        """Let running statistics (normalisers) update (True) or freeze them (False)."""

    def state_dict(self) -> dict[str, Any]:
        """Statistics that must survive a resume (normalisers); empty for plain envs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    @property
    def unwrapped(self) -> "VecEnv":
        """The innermost backend env."""
        return self
