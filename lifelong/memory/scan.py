"""The resettable diagonal linear recurrence ``h_t = a_t * h_{t-1} + u_t``, in parallel over T."""

from __future__ import annotations

import torch


def linear_scan(a: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states ``h [T, ...]`` of ``h_t = a_t * h_{t-1} + u_t`` from ``h_{-1} = h0`` (zeros if None).

    ``a`` and ``u`` are time-first and broadcast against each other; real or complex.
    A reset is ``a_t = 0``. Computed with a log-depth (Hillis-Steele) scan: ceil(log2 T)
    tensor ops instead of T, with no division or logarithm, so zeros and tiny decays are
    exact in float32.
    """
    a, u = torch.broadcast_tensors(a, u)
    h = u.clone()
    if h0 is not None:
        h[0] = h[0] + a[0] * h0
    coeff = a.clone()
    steps = h.shape[0]
    shift = 1
    while shift < steps:
        # h_t <- h_t + A_t * h_{t-shift}; A_t <- A_t * A_{t-shift}; out-of-place so reads see the old values
        h = torch.cat([h[:shift], h[shift:] + coeff[shift:] * h[:-shift]])
        coeff = torch.cat([coeff[:shift], coeff[shift:] * coeff[:-shift]])
        shift *= 2
    return h


def reverse_linear_scan(a: torch.Tensor, u: torch.Tensor, h_last: torch.Tensor | None = None) -> torch.Tensor:
    """``h_t = a_t * h_{t+1} + u_t`` backwards in time from ``h_T = h_last`` (e.g. GAE, returns)."""
    flipped = linear_scan(a.flip(0), u.flip(0), h_last)
    return flipped.flip(0)
