"""The ``Memory`` contract: a sequence core with an explicit, resettable recurrent state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

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
    state_batch_dim: int = 0  # the env dimension of every tensor in this module's state

    def select_state(self, state: State, index: torch.Tensor) -> State:
        """The state rows of the envs in ``index`` (e.g. a minibatch of sequences)."""
        return map_state(lambda t: t.index_select(self.state_batch_dim, index), state)

    def concat_states(self, states: list[State]) -> State:
        """States of several env batches joined along the env dimension."""
        return zip_states(lambda ts: torch.cat(ts, dim=self.state_batch_dim), states)

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """The state of ``batch_size`` fresh episodes."""

    @abstractmethod
    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Consume ``x [T,B,D]`` from ``state`` with resets at ``is_first``; return outputs and last state."""


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of a state (a tensor or nested tuples/lists of them)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s) for s in state)
    return state


def zip_states(fn: Callable[[list[torch.Tensor]], torch.Tensor], states: list[State]) -> State:
    """Combine corresponding tensors of several states of the same structure with ``fn``."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return fn(list(states))
    if isinstance(first, (tuple, list)):
        return type(first)(zip_states(fn, [s[i] for s in states]) for i in range(len(first)))
    return first


def detach_state(state: State) -> State:
    """A copy of ``state`` cut from the autograd graph (to store per env or across rollouts)."""
    return map_state(lambda t: t.detach().clone(), state)
