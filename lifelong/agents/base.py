"""Acting and learning interfaces shared by every algorithm."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from torch import nn

from lifelong.memory.base import State

if TYPE_CHECKING:
    from lifelong.config import Config
    from lifelong.run import Run


class Agent(nn.Module, ABC):
    """The acting side of an algorithm: ``act(obs, state, is_first) -> (action, state, extras)``."""

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Recurrent state of ``batch_size`` fresh episodes (``()`` for memoryless agents)."""

    @abstractmethod
    def act(
        self, obs: torch.Tensor, state: State, is_first: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """Actions ``[B, ...]`` for observations ``[B, ...]``; ``is_first`` resets state first."""


class Trainer(ABC):
    """The learning side: owns the loop of one algorithm and calls ``run.tick`` after each iteration."""

    agent: Agent

    def __init__(self, cfg: "Config", run: "Run") -> None:
        self.cfg = cfg
        self.run = run

    @abstractmethod
    def train(self) -> None:
        """Train until ``run.done``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything the trainer needs to continue, as tensors and plain containers."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def env_state(self) -> dict[str, Any]:
        """Env statistics (observation normaliser) that evaluation must use; empty by default."""
        return {}


def action_spec(space: gym.Space, key: str = "env.id") -> tuple[bool, int]:
    """(discrete, size) of an action space: n for Discrete, flat dim for Box; else a clear error."""
    if isinstance(space, gym.spaces.Discrete):
        return True, int(space.n)
    if isinstance(space, gym.spaces.Box):
        return False, int(torch.tensor(space.shape).prod().item()) if space.shape else 1
    raise ValueError(f"{key}: action space {space} is not supported (allowed: Discrete, Box)")


def obs_dim(space: gym.Space, key: str = "env.id") -> int:
    """Flat size of a Box observation space; else a clear error."""
    if isinstance(space, gym.spaces.Box):
        size = 1
        for d in space.shape:
            size *= int(d)
        return size
    raise ValueError(f"{key}: observation space {space} is not supported by this agent (allowed: Box)")
