"""The batched environment contract: time-first torch tensors and same-step autoreset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from lifelong.envs.params import ParamSpace


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

    **Parameterized envs** (``param_space`` is not None; see ``lifelong.envs.params``)
    run every episode with a parameter vector ``[P]``. Each env (row) holds a *pending*
    vector, the params its next episode will use, and a *current* one, those of the
    episode it is running. An episode start, at ``reset()`` or at a same-step autoreset
    inside ``step``, copies the row's pending params into its current ones. Pending
    params stay until replaced (an env never given new ones repeats them) and start as
    the env's defaults. ``set_params`` writes pending params at any time; they never
    change an episode already running.

    Each ``step`` of a parameterized backend reports ``info["params"]`` ``[B, P]``: for
    rows where an episode ended, the params of that ended episode; elsewhere those of
    the running episode. ``EpisodeStats`` passes it on as ``info["episode"]["params"]``
    next to the episode's return and length.

    A teacher therefore samples one episode ahead, with no off-by-one: ``set_params``
    for all rows, ``reset()``, then ``set_params`` again (the second episode of each
    row); after every step, for the rows that ended: ``teacher.update(episode["params"]
    [done], episode["return"][done])`` (the params really used), then
    ``set_params(teacher.sample(n), rows=done)``, the params of the episode *after* the
    one that just started (which uses the vector sampled one episode earlier).
    """

    num_envs: int
    observation_space: gym.Space  # space of a single env
    action_space: gym.Space  # space of a single env
    device: torch.device
    param_space: ParamSpace | None = None  # per-episode parameters; None for envs without

    @abstractmethod
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env (seeding them from ``seed`` when given); return obs ``[B, ...]``."""

    @abstractmethod
    def step(self, action: torch.Tensor) -> Step:
        """Apply one action per env and return the resulting ``Step`` (same-step autoreset)."""

    def close(self) -> None:
        """Release backend resources (threads, subprocesses)."""

    def set_params(self, params: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Set pending params: ``params [B, P]`` for every env, or ``params [n, P]`` for ``rows``.

        ``rows`` is a bool mask ``[B]`` or int indices ``[n]``; ``params=None`` restores the
        defaults. Each selected env's *next* episode start (reset or autoreset) uses them.
        Raises ValueError (one line) for a wrong shape or a value outside ``param_space``,
        and for envs without parameters.
        """
        raise ValueError(f"set_params: {type(self.unwrapped).__name__} takes no parameters (param_space is None)")

    @property
    def current_params(self) -> torch.Tensor | None:
        """Params ``[B, P]`` of the episodes now running (None for envs without parameters)."""
        return None

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
