"""The ``Memory`` contract: a sequence core with an explicit, resettable recurrent state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

State = Any  # a tensor, a tuple of tensors, or () for stateless cores


class Memory(nn.Module, ABC):
    """A sequence core: ``forward(x [T,B,D], state, is_first [T,B]) -> (y [T,B,H], state)``.

    ``is_first[t]`` resets the state *before* ``x[t]`` is consumed. One step is T=1.
    ``recurrent`` is False for cores whose output at t depends only on ``x[t]``, which
    lets algorithms shuffle single steps instead of sequences.
    """

    recurrent: bool = True
    output_dim: int

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """The state of ``batch_size`` fresh episodes."""

    @abstractmethod
    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Consume ``x [T,B,D]`` from ``state`` with resets at ``is_first``; return outputs and last state."""
