"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC v2": twin critics, automatic entropy tuning).

Continuous (Box) actions; MLP networks (``agent.memory.name: mlp``) or a memory core with
sequence replay (see ``lifelong.agents.offpolicy``).

* Actor: ``obs -> MLP -> (mean, log_std)``; ``u ~ N(mean, std)``, ``a = tanh(u)`` in ``[-1, 1]``,
  rescaled to the env's bounds as ``bias + scale * a`` when stepping the env. The log-prob is
  that of the squashed action in ``[-1, 1]`` (Gaussian log-density minus ``log(1 - tanh(u)^2)``,
  computed stably as TanhTransform does); like Stable-Baselines3, it leaves out the constant
  ``log(scale)``, so the target entropy ``-|A|`` means the same for every action range.
  The deterministic action is ``tanh(mean)``.
* Critics: two Q networks on ``[obs, a]`` (``a`` in ``[-1, 1]``, as stored in the replay)
  and their Polyak-averaged targets (``tau``).
* Temperature: ``alpha = exp(log_alpha)`` learned by minimising
  ``-log_alpha * (log_pi + target_entropy)`` (the form used by Stable-Baselines3).

TD target (DESIGN.md's episode boundaries): ``r + gamma * (1 - terminated) *
(min_i Q_targ_i(s', a') - alpha * log pi(a'|s'))`` with ``a' ~ pi(s')`` and
``s' = next_observation(step)``, i.e. ``final_obs`` where an episode ended: a truncated
step bootstraps from its true last observation, a terminated one from nothing, and no
step ever bootstraps from the first observation of the next episode.

Collection and the update schedule are the shared off-policy loop (``lifelong.agents.offpolicy``):
before ``learning_starts`` env steps actions are uniform over the action box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.agents.offpolicy import (
    OffPolicyAgent,
    OffPolicyConfig,
    OffPolicyTrainer,
    QNetwork,
    box_bounds,
    flat_view,
    frozen_copy,
    polyak_update,
    td_loss,
)
from lifelong.config import Config, ConfigError, setting
from lifelong.memory.mlp import mlp
from lifelong.optim import FlatAdam
from lifelong.registry import AGENTS


@dataclass
class SACConfig(OffPolicyConfig):
    """Settings of ``agent.name: sac``."""

    name: str = setting("sac", "Agent.", registry="agents")
    lr: float = setting(3e-4, "Adam learning rate of actor, critics and temperature.", low=0.0, low_open=True)
    tau: float = setting(0.005, "Polyak coefficient of the target critics (1: hard copy).", low=0.0, high=1.0)
    policy_delay: int = setting(1, "Actor and temperature update once every this many critic updates.", low=1)
    alpha: float = setting(1.0, "Initial entropy temperature.", low=0.0, low_open=True)
    autotune: bool = setting(True, "Learn the temperature toward target_entropy (false: keep alpha fixed).")
    target_entropy: float | None = setting(None, "Target policy entropy (null: -|A|).")
    log_std_min: float = setting(-5.0, "Lower bound of the actor's log-std.")
    log_std_max: float = setting(2.0, "Upper bound of the actor's log-std.")
    memory: Any = setting({"name": "mlp", "hidden": [256, 256], "activation": "relu"},
                          "Core: mlp sizes the actor and critics; a memory module (gru, s5, ...) reads the "
                          "observations for all of them (sequence replay).", registry="memory")

    def check(self, cfg: Config) -> None:
        """Shared checks; log_std bounds ordered."""
        super().check(cfg)
        if self.log_std_min >= self.log_std_max:
            raise ConfigError(f"agent.log_std_min: {self.log_std_min} must be below "
                              f"agent.log_std_max={self.log_std_max}")


def tanh_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``tanh(u)`` for ``u ~ N(mean, exp(log_std))``, summed over the last dim.

    ``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))``, exact and stable for large ``|u|``.
    """
    normal = -0.5 * ((u - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (normal - correction).sum(-1)


def td_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, next_log_prob: torch.Tensor,
              alpha: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * (next_q - alpha * next_log_prob)``; truncation does bootstrap."""
    return reward + gamma * (~terminated).to(reward.dtype) * (next_q - alpha * next_log_prob)


class Actor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy; actions in ``[-1, 1]``."""

    def __init__(self, in_dim: int, act_dim: int, cfg: SACConfig) -> None:
        super().__init__()
        widths = cfg.network_widths()
        hidden = widths.hidden
        self.trunk = mlp([in_dim, *hidden], widths.activation, widths.layer_norm)
        width = hidden[-1] if hidden else in_dim
        self.mean = nn.Linear(width, act_dim)
        self.log_std = nn.Linear(width, act_dim)
        self.log_std_min, self.log_std_max = float(cfg.log_std_min), float(cfg.log_std_max)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std (squashed smoothly into ``[log_std_min, log_std_max]``)."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return self.mean(h), log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in ``[-1, 1]`` and its log-prob ``[B]``."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), tanh_log_prob(u, mean, log_std)


class SACAgent(OffPolicyAgent):
    """Actor, twin critics, their targets and ``log_alpha`` (on a memory core's features if configured)."""

    def __init__(self, observation_space: Any, action_space: Any, cfg: SACConfig) -> None:
        super().__init__()
        low, high = box_bounds(action_space, "sac")
        in_dim = self._init_core(observation_space, cfg)
        self.act_dim = int(low.numel())
        self.act_shape = tuple(action_space.shape)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        widths = cfg.network_widths()
        self.actor = Actor(in_dim, self.act_dim, cfg)
        self.q1 = QNetwork(in_dim, self.act_dim, widths)
        self.q2 = QNetwork(in_dim, self.act_dim, widths)
        self.q1_target = frozen_copy(self.q1)
        self.q2_target = frozen_copy(self.q2)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.alpha)))

    def critic_parameters(self) -> list[nn.Parameter]:
        """Online core (if any) and critic parameters, in the order matching ``target_parameters``."""
        core = [*self.core.parameters()] if self.core is not None else []
        return [*core, *self.q1.parameters(), *self.q2.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        """Target core (if any) and target critic parameters."""
        core = [*self.core_target.parameters()] if self.core_target is not None else []
        return [*core, *self.q1_target.parameters(), *self.q2_target.parameters()]

    def to_env(self, unit_action: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` actions ``[B, A]`` rescaled to the env's bounds and shape."""
        action = self.action_bias + self.action_scale * unit_action
        return action.view(action.shape[0], *self.act_shape)

    def act(self, obs, state, is_first, deterministic: bool = False):
        """Sampled (or ``tanh(mean)``) actions in the env's bounds; extras hold ``unit_action`` and ``log_prob``."""
        x, state = self.encode(obs, state, is_first)
        if deterministic:
            mean, log_std = self.actor(x)
            unit = torch.tanh(mean)
            log_prob = tanh_log_prob(mean, mean, log_std)
        else:
            unit, log_prob = self.actor.sample(x)
        return self.to_env(unit), state, {"unit_action": unit, "log_prob": log_prob}


class SACTrainer(OffPolicyTrainer):
    """SAC on the shared off-policy loop."""

    algorithm = "sac"

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        hp: SACConfig = self.hp
        self.agent = SACAgent(self.env.observation_space, self.env.action_space, hp).to(self.device)
        agent = self.agent
        self.actor_opt = FlatAdam(agent.actor.parameters(), lr=hp.lr, eps=hp.adam_eps, max_grad_norm=hp.max_grad_norm)
        # Both critics in one flat buffer: Adam is elementwise, so this equals one optimizer per critic
        # (without max_grad_norm), with half the per-step overhead.
        self.critic_opt = FlatAdam(agent.critic_parameters(), lr=hp.lr, eps=hp.adam_eps,
                                   max_grad_norm=hp.max_grad_norm)
        self.alpha_opt = FlatAdam([agent.log_alpha], lr=hp.lr, eps=hp.adam_eps)
        self.target_flat = flat_view(agent.target_parameters())
        self.target_entropy = float(-agent.act_dim if hp.target_entropy is None else hp.target_entropy)
        self._setup_replay((agent.act_dim,), torch.float32)

    def learner_state(self) -> dict[str, Any]:
        """Networks, targets, log_alpha and optimizers."""
        return {
            "agent": self.agent.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_learner_state(self, state: dict[str, Any]) -> None:
        """Restore what ``learner_state`` returned; learning rates come from the config."""
        self.agent.load_state_dict(state["agent"])
        for name in ("actor_opt", "critic_opt", "alpha_opt"):
            opt = getattr(self, name)
            opt.load_state_dict(state[name])
            opt.lr = self.hp.lr

    def explore(self, feat: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform actions before learning starts, then samples of the policy; the replay keeps ``[-1, 1]``."""
        if random:
            unit = torch.rand(feat.shape[0], self.agent.act_dim, device=feat.device) * 2 - 1
        else:
            unit, _ = self.agent.actor.sample(feat)
        return self.agent.to_env(unit), unit

    def update(self) -> dict[str, float]:
        """One critic update; actor and temperature every ``policy_delay``; Polyak-average the targets."""
        hp, agent = self.hp, self.agent
        b = self.sample_batch()
        alpha = agent.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = agent.actor.sample(b["next_obs"])
            next_t = b["next_obs_target"]
            next_q = torch.min(agent.q1_target(next_t, next_action), agent.q2_target(next_t, next_action))
            target = td_target(b["reward"], b["terminated"], next_q, next_log_prob, alpha, hp.gamma)
        qf1_loss = td_loss(agent.q1(b["obs"], b["action"]), target)
        qf2_loss = td_loss(agent.q2(b["obs"], b["action"]), target)
        self.critic_opt.zero_grad()
        (qf1_loss + qf2_loss).backward()
        self.critic_opt.step()
        self.updates += 1

        out = [qf1_loss.detach(), qf2_loss.detach()]
        if self.updates % hp.policy_delay == 0:
            obs = b["obs"].detach()  # the actor does not train a memory core
            action, log_prob = agent.actor.sample(obs)
            q = torch.min(agent.q1(obs, action), agent.q2(obs, action))
            actor_loss = (alpha * log_prob - q).mean()
            self.actor_opt.zero_grad()
            # Gradients for the actor only: the critics pass gradients through to the action but
            # skip their own weight gradients (a tenth of the update's arithmetic).
            actor_loss.backward(inputs=self.actor_opt.params)
            self.actor_opt.step()
            out.append(actor_loss.detach())
            if hp.autotune:
                alpha_loss = self.alpha_step(log_prob.detach())
                out.append(alpha_loss.detach())
        polyak_update([self.target_flat], [self.critic_opt.flat], hp.tau)
        values = torch.stack(out).tolist()
        names = ["losses/qf1", "losses/qf2", "losses/actor", "losses/alpha"][: len(values)]
        metrics = dict(zip(names, values))
        metrics["charts/alpha"] = float(agent.log_alpha.detach().exp())
        return metrics

    def alpha_step(self, log_prob: torch.Tensor) -> torch.Tensor:
        """One temperature update from detached ``log_prob``s: ``loss = -log_alpha * (log_pi + target_entropy)``."""
        alpha_loss = -(self.agent.log_alpha * (log_prob + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        return alpha_loss


@AGENTS.register("sac", config=SACConfig, summary="SAC (twin critics, auto temperature), continuous actions.")
def make_sac(cfg: Config, run: Any) -> SACTrainer:
    """Build the SAC trainer."""
    return SACTrainer(cfg, run)
