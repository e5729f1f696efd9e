"""Fast and Forgetful Memory (Morad et al. 2023) over the resettable linear scan.

``[y_hat, thru, g] = Linear(x)``; input gate ``sigmoid(g[:m])``, output gate
``sigmoid(g[m:])``; ``u_t = y_hat_t * in_t`` broadcast over c context filters; state
``S_t = gamma * S_{t-1} + u_t`` (complex ``[B, m, c]``) with ``gamma = exp(alpha + i omega)``,
alpha per memory row and omega per context column, both trainable; output
``z = W_mix [Re S; Im S]``, ``y = LN(z) * out + thru * (1 - out)`` (LayerNorm without
affine). Unlike the published code, a reset inside the batch zeroes the state before
``u_t`` (``gamma * (1 - is_first_t)`` in the scan).

Init as in proroklab/ffm: ``limit = ln(float_max) / max_len - 0.01`` with max_len 1024 and
float_max the float64 maximum (the reference's default dtype; this is what gives
limit ~0.683), ``alpha = linspace(-limit + 0.01, ln(0.01) / max_period, m)`` (about
-0.673 .. -0.0045), clamped to ``[-limit, -1e-8]`` on every forward, and
``omega = 2 pi / linspace(min_period, max_period, c)``. The reference also projects the
alpha parameter back into that range in place at each forward; we only clamp the value
used (a plain ``clamp``), keeping the forward pass free of side effects. Our scan is
exact for any decay, so the clamp no longer guards against overflow; it is kept so the
model is the published one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.memory.scan import linear_scan
from lifelong.registry import MEMORY

MAX_LEN = 1024  # the reference's max_len: sets the decay limit
FORGOTTEN_AT = 0.01  # the slowest initial decay leaves this fraction after max_period steps
FUDGE = 0.01


@dataclass
class FFMConfig:
    """Settings of the ``ffm`` core."""

    name: str = setting("ffm", "Memory module.", registry="memory")
    hidden: int = setting(128, "Output width (and the width of the pass-through and output gate).", low=1)
    memory_size: int = setting(32, "m: decay rows of the memory (one alpha each).", low=1)
    context_size: int = setting(4, "c: complex context columns per row (one omega each).", low=1)
    min_period: float = setting(1.0, "Shortest initial oscillation period, in steps.", low=0.0, low_open=True)
    max_period: float = setting(1024.0, "Longest initial oscillation period and slowest decay horizon, in steps.",
                                low=0.0, low_open=True)

    def validate(self, prefix: str) -> None:
        """Reject an inverted period range."""
        from lifelong.config import ConfigError

        if self.min_period > self.max_period:
            raise ConfigError(f"{prefix}min_period: {self.min_period} exceeds max_period={self.max_period} "
                              f"(allowed: min_period <= max_period)")


def decay_limit() -> float:
    """``ln(float64 max) / max_len - 0.01``: the fastest decay per step the reference allows (~0.683)."""
    return math.log(torch.finfo(torch.float64).max) / MAX_LEN - FUDGE


class FFMMemory(Memory):
    """Fast and Forgetful Memory with resets; state complex ``[B, m, c]``, env dim 0."""

    state_batch_dim = 0

    def __init__(self, input_dim: int, cfg: FFMConfig) -> None:
        super().__init__()
        self.memory_size, self.context_size, self.hidden = cfg.memory_size, cfg.context_size, cfg.hidden
        self.pre = nn.Linear(input_dim, 2 * cfg.memory_size + 2 * cfg.hidden)
        self.limit = decay_limit()
        low = -self.limit + FUDGE
        high = max(min(-1e-6, math.log(FORGOTTEN_AT) / cfg.max_period), low)
        self.alpha = nn.Parameter(torch.linspace(low, high, cfg.memory_size))
        self.omega = nn.Parameter(2 * math.pi / torch.linspace(cfg.min_period, cfg.max_period, cfg.context_size))
        self.mix = nn.Linear(2 * cfg.memory_size * cfg.context_size, cfg.hidden)
        self.output_dim = cfg.hidden

    def gamma(self) -> torch.Tensor:
        """The per-step complex decay ``exp(alpha + i omega)``, ``[m, c]``."""
        alpha = self.alpha.clamp(-self.limit, -1e-8)
        shape = (self.memory_size, self.context_size)
        return torch.exp(torch.complex(alpha[:, None].expand(shape), self.omega[None, :].expand(shape)))

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Zeros, complex ``[B, m, c]``."""
        dtype = torch.promote_types(self.alpha.dtype, torch.complex64)
        return torch.zeros(batch_size, self.memory_size, self.context_size, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Outputs ``[T, B, hidden]`` and the last memory ``[B, m, c]``."""
        m, h = self.memory_size, self.hidden
        y_hat, thru, gates = self.pre(x).split([m, h, m + h], dim=-1)
        in_gate, out_gate = torch.sigmoid(gates).split([m, h], dim=-1)
        keep = (~is_first).to(x.dtype)[..., None, None]
        memory = linear_scan(self.gamma() * keep, (y_hat * in_gate).unsqueeze(-1), state)
        z = self.mix(torch.view_as_real(memory).flatten(-3))
        # lerp(thru, LN(z), out) = LN(z) * out + thru * (1 - out)
        return torch.lerp(thru, F.layer_norm(z, (h,)), out_gate), memory[-1]


@MEMORY.register("ffm", config=FFMConfig, summary="Fast and Forgetful Memory on the resettable parallel scan.")
def make_ffm(input_dim: int, cfg: FFMConfig) -> FFMMemory:
    """Build the ``ffm`` core."""
    return FFMMemory(input_dim, cfg)
