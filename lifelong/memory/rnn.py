"""GRU and LSTM cores: torch's fused ``nn.GRU``/``nn.LSTM`` with resets inside a sequence.

A reset zeroes the state of the envs whose ``is_first[t]`` is set before ``x[t]`` is
consumed. The fused kernel cannot reset mid-sequence, so the sequence is split at every
step where any env resets and the kernel runs once per reset-free span (one call when
only the first step resets, the common acting and short-rollout case). Zeroing is a
masked fill, so no gradient crosses a reset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.registry import MEMORY


@dataclass
class GRUConfig:
    """Settings of the ``gru`` core."""

    name: str = setting("gru", "Memory module.", registry="memory")
    hidden: int = setting(128, "Hidden units per layer (the output width).", low=1)
    layers: int = setting(1, "Stacked recurrent layers.", low=1)


@dataclass
class LSTMConfig:
    """Settings of the ``lstm`` core."""

    name: str = setting("lstm", "Memory module.", registry="memory")
    hidden: int = setting(128, "Hidden units per layer (the output width).", low=1)
    layers: int = setting(1, "Stacked recurrent layers.", low=1)


def reset_spans(is_first: torch.Tensor) -> list[tuple[int, int]]:
    """``[start, end)`` spans of T with resets only at their first step (one device sync)."""
    steps = is_first.shape[0]
    if steps <= 1:
        return [(0, steps)]
    cuts = (is_first[1:].any(dim=1).nonzero().flatten() + 1).tolist()
    bounds = [0, *cuts, steps]
    return list(zip(bounds[:-1], bounds[1:]))


class FusedRNNMemory(Memory):
    """Shared forward of the GRU and LSTM cores: the fused kernel per reset-free span.

    State: ``[layers, B, hidden]`` tensors (one for GRU, ``(h, c)`` for LSTM); the env
    (batch) dimension is 1.
    """

    state_batch_dim = 1
    rnn: nn.GRU | nn.LSTM

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.layers = layers
        self.output_dim = hidden

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Zeros ``[layers, B, hidden]`` (a pair for LSTM)."""
        dtype = self.rnn.weight_hh_l0.dtype
        zeros = torch.zeros(self.layers, batch_size, self.hidden, device=device, dtype=dtype)
        return (zeros, zeros.clone()) if isinstance(self.rnn, nn.LSTM) else zeros

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Run the fused kernel over each reset-free span, zeroing the resetting envs' state first."""
        outputs = []
        for start, end in reset_spans(is_first):
            reset = is_first[start].view(1, -1, 1)
            state = tuple(s.masked_fill(reset, 0.0) for s in state) if isinstance(state, tuple) \
                else state.masked_fill(reset, 0.0)
            y, state = self.rnn(x[start:end], state)
            outputs.append(y)
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), state


class GRUMemory(FusedRNNMemory):
    """A stacked GRU (torch's fused ``nn.GRU``); state ``[layers, B, hidden]``, env dim 1."""

    def __init__(self, input_dim: int, cfg: GRUConfig) -> None:
        super().__init__(cfg.hidden, cfg.layers)
        self.rnn = nn.GRU(input_dim, cfg.hidden, cfg.layers)


class LSTMMemory(FusedRNNMemory):
    """A stacked LSTM (torch's fused ``nn.LSTM``); state ``(h, c)``, each ``[layers, B, hidden]``, env dim 1."""

    def __init__(self, input_dim: int, cfg: LSTMConfig) -> None:
        super().__init__(cfg.hidden, cfg.layers)
        self.rnn = nn.LSTM(input_dim, cfg.hidden, cfg.layers)


@MEMORY.register("gru", config=GRUConfig, summary="Stacked GRU (fused kernel, split at resets).")
def make_gru(input_dim: int, cfg: GRUConfig) -> GRUMemory:
    """Build the ``gru`` core."""
    return GRUMemory(input_dim, cfg)


@MEMORY.register("lstm", config=LSTMConfig, summary="Stacked LSTM (fused kernel, split at resets).")
def make_lstm(input_dim: int, cfg: LSTMConfig) -> LSTMMemory:
    """Build the ``lstm`` core."""
    return LSTMMemory(input_dim, cfg)
