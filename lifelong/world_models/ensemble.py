"""A probabilistic ensemble of MLP dynamics models (PETS, Chua et al. 2018; MBPO), batched over members.

Each of the ``E`` members maps ``(obs, action)`` to a diagonal Gaussian over
``[next_obs - obs, reward]``. All members run as one batched matmul per layer
(weights ``[E, in, out]``), never a Python loop over members. The log-variance is kept
inside learned soft bounds::

    logvar = max_logvar - softplus(max_logvar - raw)
    logvar = min_logvar + softplus(logvar - min_logvar)

and the loss is the PETS Gaussian NLL (without the constant and the 1/2) summed over
members plus ``bound_weight * (sum(max_logvar) - sum(min_logvar))``, which keeps the
bounds tight. Inputs are standardised by statistics set with ``set_normalizer``.
``predict`` draws each row's next state from one random member (TS1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.memory.mlp import ACTIVATIONS


@dataclass
class EnsemblePrediction:
    """Per-member Gaussians over ``[next_obs, reward]`` and one TS1 sample per row."""

    mean: torch.Tensor  # [E, N, obs_dim (+1)]: next_obs (and reward) means of every member
    var: torch.Tensor  # [E, N, obs_dim (+1)]
    next_obs: torch.Tensor  # [N, obs_dim]: sample (or mean) of a random member per row
    reward: torch.Tensor | None  # [N]
    member: torch.Tensor  # [N]: the member each row used


class GaussianEnsemble(nn.Module):
    """``members`` MLPs predicting mean and bounded log-variance of ``(next_obs - obs, reward)``."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        members: int = 7,
        hidden: int = 200,
        layers: int = 4,
        activation: str = "silu",
        predict_reward: bool = True,
        min_logvar: float = -10.0,
        max_logvar: float = 0.5,
        bound_weight: float = 0.01,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.members = obs_dim, action_dim, members
        self.predict_reward = predict_reward
        self.out_dim = obs_dim + int(predict_reward)
        self.bound_weight = bound_weight
        sizes = [obs_dim + action_dim] + [hidden] * layers + [2 * self.out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # Truncated normal with std 1/(2 sqrt(fan_in)), as in the PETS/MBPO code; members differ by their draw.
            std = 1.0 / (2.0 * math.sqrt(fan_in))
            self.weights.append(nn.Parameter(nn.init.trunc_normal_(torch.empty(members, fan_in, fan_out), std=std,
                                                                   a=-2 * std, b=2 * std)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, fan_out)))
        self.activation = ACTIVATIONS[activation]()
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), float(max_logvar)))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), float(min_logvar)))
        self.register_buffer("input_mean", torch.zeros(obs_dim + action_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + action_dim))

    @torch.no_grad()
    def set_normalizer(self, obs: torch.Tensor, action: torch.Tensor) -> None:
        """Standardise inputs by the mean and std of these ``[N, obs_dim]``/``[N, action_dim]`` rows."""
        x = torch.cat([obs, action], -1).reshape(-1, self.obs_dim + self.action_dim).to(self.input_mean.dtype)
        std = x.std(0)
        self.input_mean.copy_(x.mean(0))
        # Constant inputs (std ~ 0) are left unscaled rather than blown up.
        self.input_std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and bounded log-variance ``[E, N, out_dim]`` of ``[delta_obs, reward]``.

        ``obs``/``action`` are ``[N, ...]`` (every member sees the same rows) or ``[E, N, ...]``.
        """
        x = (torch.cat([obs, action.to(obs.dtype)], -1) - self.input_mean) / self.input_std
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = self.activation(x)
        mean, raw = x.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def targets(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor | None) -> torch.Tensor:
        """Training targets ``[..., out_dim]``: ``next_obs - obs`` and (if predicted) the reward."""
        delta = next_obs - obs
        if not self.predict_reward:
            return delta
        return torch.cat([delta, reward.to(delta.dtype).unsqueeze(-1)], -1)

    def loss(
        self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PETS loss and metrics for rows ``[N, ...]`` shared by all members or ``[E, N, ...]`` (e.g. bootstrapped).

        Metrics: ``nll`` (mean Gaussian NLL per component, constants included), ``mse`` of the
        means, ``logvar_mean``.
        """
        mean, logvar = self(obs, action)
        target = self.targets(obs, next_obs, reward)
        inv_var = torch.exp(-logvar)
        error = (mean - target).square()
        per_member = (error * inv_var + logvar).mean((-2, -1))
        loss = per_member.sum() + self.bound_weight * (self.max_logvar.sum() - self.min_logvar.sum())
        nll = 0.5 * (error * inv_var + logvar + math.log(2 * math.pi)).mean()
        return loss, {"nll": nll.detach(), "mse": error.mean().detach(), "logvar_mean": logvar.mean().detach()}

    @torch.no_grad()
    def predict(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> EnsemblePrediction:
        """Per-member Gaussians of ``[next_obs, reward]`` for ``obs [N, O]``, ``action [N, A]``, and a TS1 draw.

        Each row picks one member uniformly at random and takes a sample of its Gaussian (its
        mean if ``deterministic``).
        """
        mean, logvar = self(obs, action)
        var = logvar.exp()
        base = torch.zeros_like(mean[0])
        base[:, : self.obs_dim] = obs
        mean = mean + base  # delta -> next_obs
        rows = obs.shape[0]
        member = torch.randint(self.members, (rows,), device=obs.device, generator=generator)
        index = torch.arange(rows, device=obs.device)
        chosen_mean, chosen_var = mean[member, index], var[member, index]
        if deterministic:
            draw = chosen_mean
        else:
            noise = torch.randn(chosen_mean.shape, device=obs.device, dtype=obs.dtype, generator=generator)
            draw = chosen_mean + chosen_var.sqrt() * noise
        reward = draw[:, self.obs_dim] if self.predict_reward else None
        return EnsemblePrediction(mean, var, draw[:, : self.obs_dim], reward, member)

    def step(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(next_obs [N, O], reward [N] or None)``: one TS1 sample per row (the ``ModelEnv`` dynamics signature)."""
        prediction = self.predict(obs, action)
        return prediction.next_obs, prediction.reward


def bootstrap_indices(members: int, rows: int, device: torch.device | str | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Row indices ``[members, rows]`` drawn with replacement: one bootstrap resample of the data per member."""
    return torch.randint(rows, (members, rows), device=device, generator=generator)
