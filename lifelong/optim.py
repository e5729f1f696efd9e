"""Adam over one flat parameter buffer, with global gradient-norm clipping in the same pass.

RL networks are small, so a gradient step is dominated by per-tensor overhead rather
than arithmetic. Here every parameter is a view into one contiguous buffer and every
gradient a view into another (autograd accumulates into existing ``.grad`` tensors in
place), so zeroing, clipping and the Adam update are a handful of tensor ops whatever
the number of layers. The update is the same as ``torch.optim.Adam`` preceded by
``torch.nn.utils.clip_grad_norm_`` (tested to match). It also avoids ``torch.optim``,
whose first optimizer costs about 1.4 s of imports per process.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn


_FUSED = hasattr(torch, "_fused_adam_")


class FlatAdam:
    """Adam (Kingma & Ba) on a flattened copy of ``params``; build it after moving the model to its device.

    ``lr``, ``betas`` and ``eps`` are Adam's; ``max_grad_norm`` (None: no clipping)
    rescales the whole gradient so its L2 norm is at most that value before each step.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        max_grad_norm: float | None = None,
    ) -> None:
        unique: dict[int, nn.Parameter] = {}
        for p in params:
            if p.requires_grad:
                unique.setdefault(id(p), p)
        self.params = list(unique.values())
        if not self.params:
            raise ValueError("FlatAdam: no trainable parameters")
        first = self.params[0]
        for p in self.params:
            if p.dtype != first.dtype or p.device != first.device or not p.is_floating_point():
                raise ValueError(
                    f"FlatAdam: parameters must share one real floating dtype and device "
                    f"(found {p.dtype} on {p.device} beside {first.dtype} on {first.device})"
                )
        total = sum(p.numel() for p in self.params)
        self.flat = torch.empty(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.flat[offset : offset + n].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            offset += n
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.max_grad_norm = max_grad_norm
        self.steps = 0
        self._step_tensor = torch.zeros((), dtype=self.flat.dtype, device=self.flat.device)

    def zero_grad(self) -> None:
        """Zero every gradient (one op on the flat gradient buffer)."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Clip (if configured) and apply one Adam update; return the gradient norm before clipping."""
        norm = torch.linalg.vector_norm(self.grad)
        if self.max_grad_norm is not None:
            # Same rule as clip_grad_norm_: scale by max_norm / (norm + 1e-6), never up.
            self.grad.mul_((self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
        self.steps += 1
        beta1, beta2 = self.betas
        if _FUSED:
            # torch's fused Adam kernel: one pass over the buffers, same arithmetic as below.
            self._step_tensor.fill_(self.steps)
            torch._fused_adam_([self.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [], [self._step_tensor],
                               lr=self.lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps,
                               amsgrad=False, maximize=False)
            return norm
        self.exp_avg.lerp_(self.grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.grad, self.grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-step_size)
        return norm

    def state_dict(self) -> dict[str, Any]:
        """Moments and step count (the learning rate comes from the config, not the checkpoint)."""
        return {"steps": self.steps, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore moments and step count saved by ``state_dict``."""
        if state["exp_avg"].shape != self.exp_avg.shape:
            raise ValueError(
                f"optimizer state holds {state['exp_avg'].numel()} parameters, this model has {self.exp_avg.numel()}"
            )
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
