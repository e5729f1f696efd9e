"""Distributions and losses of DreamerV3-style world models.

* ``symlog``/``symexp``: the squashing of vector inputs and regression targets.
* Two-hot regression (reward and critic), as in DreamerV3's code: a categorical over ``K``
  bins at ``linspace(-20, 20, K)`` in symlog space; a target's ``symlog`` is split between
  its two neighbouring bins in proportion to its distance from each, and the prediction is
  ``symexp`` of the expected bin. Averaging in symlog space matters: averaging the raw
  values ``symexp(bin)`` (up to ``+-4.85e8``) makes the prediction hinge on tail
  probabilities the cross-entropy barely moves (1e-6 on the last bin alone shifts it by
  485). The expectation is summed symmetrically around the middle bin (exactly 0 for
  odd ``K``) so that a uniform prediction, the output of a zero-initialised head, is
  exactly 0.0.
* Categorical latents: 1% uniform mix of the probabilities, straight-through one-hot
  samples (``sample + probs - sg(probs)``).
* KL balancing with free bits: ``dyn = max(free, KL(sg(post) || prior))`` trains the prior,
  ``rep = max(free, KL(post || sg(prior)))`` trains the representation; the KL is summed
  over the latent variables of a step before clamping, as in DreamerV3.
"""

from __future__ import annotations

import torch
from torch import nn


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * (exp(|x|) - 1)``, the inverse of ``symlog``."""
    return torch.sign(x) * torch.expm1(x.abs())


def twohot_bins(count: int = 255, limit: float = 20.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Bin positions in symlog space, ``linspace(-limit, limit, count)``; for odd ``count`` the middle bin is 0."""
    if count < 2:
        raise ValueError(f"bins: {count} (allowed: >= 2)")
    grid = torch.linspace(-limit, limit, count, dtype=torch.float64)
    grid = (grid - grid.flip(0)) / 2  # exactly antisymmetric, so mirrored bins cancel exactly
    return grid.to(torch.float32).to(device)


def twohot_encode(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot weights ``[..., K]`` of ``symlog(x) [...]`` over sorted symlog-space ``bins [K]`` (clamped to the ends)."""
    y = symlog(x).clamp(bins[0], bins[-1])
    upper = torch.searchsorted(bins, y.detach().contiguous(), right=True).clamp(1, len(bins) - 1)
    lower = upper - 1
    low_value, high_value = bins[lower], bins[upper]
    high_weight = ((y - low_value) / (high_value - low_value)).clamp(0.0, 1.0)
    weights = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    weights.scatter_(-1, lower.unsqueeze(-1), (1.0 - high_weight).unsqueeze(-1))
    weights.scatter_add_(-1, upper.unsqueeze(-1), high_weight.unsqueeze(-1))
    return weights


def twohot_mean(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The prediction ``symexp(sum_k probs_k bins_k)``, the sum taken in mirrored pairs around the middle bin.

    Pairing bin ``m - i`` with bin ``m + i`` first means equal probabilities on mirrored bins
    cancel exactly, so a uniform distribution predicts exactly 0.
    """
    count = bins.shape[0]
    middle = (count - 1) // 2
    below = (probs[..., :middle] * bins[:middle]).flip(-1)
    above = probs[..., count - middle:] * bins[count - middle:]
    centre = (probs[..., middle:count - middle] * bins[middle:count - middle]).sum(-1)
    return symexp((below + above).sum(-1) + centre)


class TwoHotHead(nn.Module):
    """An MLP trunk and a zero-initialised linear layer to ``K`` two-hot logits (reward and critic heads)."""

    def __init__(self, trunk: nn.Module, trunk_dim: int, bins: int = 255) -> None:
        super().__init__()
        self.trunk = trunk
        self.out = nn.Linear(trunk_dim, bins)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("bins", twohot_bins(bins), persistent=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., K]``."""
        return self.out(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted expected value ``[...]``."""
        return twohot_mean(torch.softmax(self.logits(x), dim=-1), self.bins)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy ``[...]`` between the prediction and the two-hot encoding of ``target``."""
        log_probs = torch.log_softmax(self.logits(x), dim=-1)
        return -(twohot_encode(target.detach(), self.bins) * log_probs).sum(-1)


def unimix_log_probs(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """Log of ``(1 - unimix) * softmax(logits) + unimix / C`` over the last dimension."""
    if unimix <= 0.0:
        return torch.log_softmax(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.log((1.0 - unimix) * probs + unimix / logits.shape[-1])


def straight_through_sample(log_probs: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """A one-hot draw (or the mode when ``sample`` is False) with straight-through gradient to the probabilities.

    The value is exactly one-hot; the gradient is that of ``probs``, as in ``sample + probs - sg(probs)``.
    """
    probs = log_probs.detach().exp()
    if sample:
        # Inverse CDF: one uniform per variable (Gumbel-max would need two logs per class).
        cdf = probs.cumsum(-1)
        u = torch.rand_like(cdf[..., -1:]) * cdf[..., -1:]
        index = (cdf <= u).sum(-1).clamp_(max=log_probs.shape[-1] - 1)
    else:
        index = log_probs.detach().argmax(-1)
    return _StraightThrough.apply(log_probs, index, probs)


class _StraightThrough(torch.autograd.Function):
    """One-hot ``index`` forward; backward the gradient of ``exp(log_probs)``: ``grad * probs``."""

    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(probs)
        return torch.zeros_like(log_probs).scatter_(-1, index.unsqueeze(-1), 1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (probs,) = ctx.saved_tensors
        return grad * probs, None, None


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` of categoricals ``[..., S, C]`` summed over the ``S`` latents: ``[...]``."""
    return (log_p.exp() * (log_p - log_q)).sum((-2, -1))


def kl_balance(
    post_log_probs: torch.Tensor,
    prior_log_probs: torch.Tensor,
    free_nats: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-step ``(dyn, rep, kl)`` losses from log-probabilities ``[..., S, C]`` and the raw KL ``[...]``.

    ``dyn = max(free_nats, KL(sg(post) || prior))`` (gradient only into the prior),
    ``rep = max(free_nats, KL(post || sg(prior)))`` (gradient only into the posterior);
    below ``free_nats`` a term is constant and passes no gradient at all.
    Returns ``(dyn, rep, kl)`` each ``[...]`` where ``kl`` is the unclamped, detached KL.
    """
    dyn, rep = _BalancedKL.apply(post_log_probs, prior_log_probs)
    return dyn.clamp(min=free_nats), rep.clamp(min=free_nats), dyn.detach()


class _BalancedKL(torch.autograd.Function):
    """``KL(post || prior)`` computed once and returned twice, each copy differentiable on one side only.

    The first output is ``KL(sg(post) || prior)``: gradient ``-p_post`` into the prior's
    log-probabilities. The second is ``KL(post || sg(prior))``: gradient
    ``p_post * (log p_post - log p_prior + 1)`` into the posterior's. The same as two
    ``categorical_kl`` calls on detached inputs, for one forward pass instead of two.
    """

    @staticmethod
    def forward(ctx, post_log_probs: torch.Tensor, prior_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        post_probs = post_log_probs.exp()
        diff = post_log_probs - prior_log_probs
        kl = (post_probs * diff).sum((-2, -1))
        ctx.save_for_backward(post_probs, diff)
        return kl, kl.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_dyn: torch.Tensor, grad_rep: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        post_probs, diff = ctx.saved_tensors
        grad_post = grad_prior = None
        if ctx.needs_input_grad[0]:
            grad_post = (diff + 1.0).mul_(post_probs).mul_(grad_rep[..., None, None])
        if ctx.needs_input_grad[1]:
            grad_prior = post_probs * -grad_dyn[..., None, None]
        return grad_post, grad_prior
