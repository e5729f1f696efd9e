"""Lambda-returns over imagined trajectories and DreamerV3's percentile return normaliser.

Indexing convention of ``lambda_returns`` (the classic off-by-one of ports): with states
``s_0 .. s_H`` of a trajectory and ``action_k`` taken at ``s_k``,

    reward[k] : reward of action_k (the transition s_k -> s_{k+1}),      k = 0 .. H-1
    cont[k]   : 1 if the episode continues after that transition,        k = 0 .. H-1
    value[k]  : V(s_k),                                                   k = 0 .. H

    R_k = reward[k] + gamma * cont[k] * ((1 - lam) * value[k+1] + lam * R_{k+1}),   R_H = value[H]

so ``R_k`` is the return of ``s_k`` and bootstraps from ``value[k+1]``, never ``value[k]``.
With a world model, ``reward[k]`` and ``cont[k]`` are predicted from the features of
``s_{k+1}``. The recursion is the reverse linear scan ``R_k = a_k R_{k+1} + u_k``.
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.memory.scan import reverse_linear_scan


def lambda_returns(
    reward: torch.Tensor,
    cont: torch.Tensor,
    value: torch.Tensor,
    lam: float = 0.95,
    gamma: float = 1.0 - 1.0 / 333.0,
) -> torch.Tensor:
    """TD(lambda) returns ``[H, ...]`` of ``reward [H, ...]``, ``cont [H, ...]``, ``value [H+1, ...]`` (module doc)."""
    if value.shape[0] != reward.shape[0] + 1 or cont.shape != reward.shape:
        raise ValueError(f"lambda_returns: reward {tuple(reward.shape)}, cont {tuple(cont.shape)} and value "
                         f"{tuple(value.shape)} must be [H, ...], [H, ...] and [H+1, ...]")
    discount = gamma * cont.to(value.dtype)
    targets = reward + discount * (1.0 - lam) * value[1:]
    return reverse_linear_scan(discount * lam, targets, value[-1])


class ReturnNormalizer:
    """DreamerV3 return scale: EMA (``rate``) of the 5th and 95th percentiles, ``scale = max(1, P95 - P5)``.

    The EMAs start at 0, as in the reference (so the scale is 1 until returns spread out).
    """

    def __init__(self, rate: float = 0.01, low_percentile: float = 5.0, high_percentile: float = 95.0,
                 min_scale: float = 1.0) -> None:
        self.rate = rate
        self.quantiles = torch.tensor([low_percentile / 100.0, high_percentile / 100.0])
        self.min_scale = min_scale
        self.low = torch.zeros(())
        self.high = torch.zeros(())

    def update(self, returns: torch.Tensor) -> None:
        """Move the percentile EMAs towards the percentiles of ``returns`` (any shape)."""
        flat = returns.detach().flatten().float()
        low, high = torch.quantile(flat, self.quantiles.to(flat.device))
        self.low = self.low.to(flat.device).lerp(low, self.rate)
        self.high = self.high.to(flat.device).lerp(high, self.rate)

    @property
    def scale(self) -> torch.Tensor:
        """``max(min_scale, P95 - P5)`` of the EMAs (min_scale 1 in DreamerV3)."""
        return (self.high - self.low).clamp(min=self.min_scale)

    @property
    def offset(self) -> torch.Tensor:
        """The 5th-percentile EMA (subtracted from returns and baselines before scaling)."""
        return self.low

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - offset) / scale``; differences such as advantages only see the scale."""
        return (x - self.offset) / self.scale

    def state_dict(self) -> dict[str, Any]:
        """The two EMAs."""
        return {"low": self.low.clone(), "high": self.high.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the EMAs saved by ``state_dict``."""
        self.low = state["low"].clone()
        self.high = state["high"].clone()
