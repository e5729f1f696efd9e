"""TD3 (Fujimoto et al. 2018): twin critics, target policy smoothing, delayed actor updates.

Continuous (Box) actions; MLP networks (``agent.memory.name: mlp``) or a memory core with
sequence replay (see ``lifelong.agents.offpolicy``).

* Actor: ``obs -> MLP -> tanh`` gives a deterministic action in ``[-1, 1]``, rescaled to the
  env's bounds as ``bias + scale * a``. Exploration adds ``N(0, exploration_noise)`` in that
  unit space (so the noise is relative to the action range) and clips to ``[-1, 1]``.
* Critics: two Q networks on ``[obs, a]``; the actor and both critics have Polyak targets.
* Target: ``r + gamma * (1 - terminated) * min_i Q_targ_i(s', clip(pi_targ(s') + eps, -1, 1))``
  with ``eps = clip(N(0, target_policy_noise), -target_noise_clip, target_noise_clip)`` and
  ``s' = next_observation(step)``: a truncated step bootstraps from its true last
  observation, a terminated one from nothing.
* Every ``policy_delay`` critic updates: one actor step maximising ``Q_1(s, pi(s))``, then the
  Polyak update of all targets (as the paper and Stable-Baselines3 do).

Collection and the update schedule are the shared off-policy loop (``lifelong.agents.offpolicy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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
from lifelong.config import Config, setting
from lifelong.memory.mlp import mlp
from lifelong.optim import FlatAdam
from lifelong.registry import AGENTS


@dataclass
class TD3Config(OffPolicyConfig):
    """Settings of ``agent.name: td3``."""

    name: str = setting("td3", "Agent.", registry="agents")
    lr: float = setting(1e-3, "Adam learning rate of actor and critics.", low=0.0, low_open=True)
    tau: float = setting(0.005, "Polyak coefficient of the targets (1: hard copy).", low=0.0, high=1.0)
    policy_delay: int = setting(2, "Actor and target updates once every this many critic updates.", low=1)
    exploration_noise: float = setting(0.1, "Std of the Gaussian acting noise, in units of half the action range.",
                                       low=0.0)
    target_policy_noise: float = setting(0.2, "Std of the target policy smoothing noise (unit action space).",
                                         low=0.0)
    target_noise_clip: float = setting(0.5, "Clip of the target policy smoothing noise.", low=0.0)
    memory: Any = setting({"name": "mlp", "hidden": [256, 256], "activation": "relu"},
                          "Core: mlp sizes the actor and critics; a memory module (gru, s5, ...) reads the "
                          "observations for all of them (sequence replay).", registry="memory")


def td3_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * next_q``; truncation does bootstrap."""
    return reward + gamma * (~terminated).to(reward.dtype) * next_q


class DeterministicActor(nn.Module):
    """``obs -> MLP -> tanh``: actions in ``[-1, 1]``."""

    def __init__(self, in_dim: int, act_dim: int, core: Any) -> None:
        super().__init__()
        self.net = mlp([in_dim, *core.hidden, act_dim], core.activation, core.layer_norm, last_activation=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic unit actions ``[B, A]``."""
        return torch.tanh(self.net(obs))


class TD3Agent(OffPolicyAgent):
    """Actor, twin critics and the targets of all three (on a memory core's features if configured)."""

    def __init__(self, observation_space: Any, action_space: Any, cfg: TD3Config) -> None:
        super().__init__()
        low, high = box_bounds(action_space, "td3")
        in_dim = self._init_core(observation_space, cfg)
        self.act_dim = int(low.numel())
        self.act_shape = tuple(action_space.shape)
        self.exploration_noise = float(cfg.exploration_noise)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        widths = cfg.network_widths()
        self.actor = DeterministicActor(in_dim, self.act_dim, widths)
        self.q1 = QNetwork(in_dim, self.act_dim, widths)
        self.q2 = QNetwork(in_dim, self.act_dim, widths)
        self.actor_target = frozen_copy(self.actor)
        self.q1_target = frozen_copy(self.q1)
        self.q2_target = frozen_copy(self.q2)

    def to_env(self, unit_action: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` actions ``[B, A]`` rescaled to the env's bounds and shape."""
        action = self.action_bias + self.action_scale * unit_action
        return action.view(action.shape[0], *self.act_shape)

    def noisy(self, unit_action: torch.Tensor) -> torch.Tensor:
        """Exploration: Gaussian noise in the unit action space, clipped to ``[-1, 1]``."""
        noise = torch.randn_like(unit_action) * self.exploration_noise
        return (unit_action + noise).clamp_(-1.0, 1.0)

    def critic_parameters(self) -> list[nn.Parameter]:
        """Online core (if any) and critic parameters, in the order matching ``critic_target_parameters``."""
        core = [*self.core.parameters()] if self.core is not None else []
        return [*core, *self.q1.parameters(), *self.q2.parameters()]

    def critic_target_parameters(self) -> list[nn.Parameter]:
        """Target core (if any) and target critic parameters."""
        core = [*self.core_target.parameters()] if self.core_target is not None else []
        return [*core, *self.q1_target.parameters(), *self.q2_target.parameters()]

    def act(self, obs, state, is_first, deterministic: bool = False):
        """The actor's action (plus exploration noise unless ``deterministic``) in the env's bounds."""
        x, state = self.encode(obs, state, is_first)
        unit = self.actor(x)
        if not deterministic:
            unit = self.noisy(unit)
        return self.to_env(unit), state, {"unit_action": unit}


class TD3Trainer(OffPolicyTrainer):
    """TD3 on the shared off-policy loop."""

    algorithm = "td3"

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        hp: TD3Config = self.hp
        self.agent = TD3Agent(self.env.observation_space, self.env.action_space, hp).to(self.device)
        agent = self.agent
        self.actor_opt = FlatAdam(agent.actor.parameters(), lr=hp.lr, eps=hp.adam_eps, max_grad_norm=hp.max_grad_norm)
        self.critic_opt = FlatAdam(agent.critic_parameters(), lr=hp.lr, eps=hp.adam_eps,
                                   max_grad_norm=hp.max_grad_norm)
        # Targets as flat buffers laid out like the optimizers' flat parameter buffers: one Polyak
        # step is two lerps.
        self.target_flats = [flat_view([*agent.actor_target.parameters()]),
                             flat_view(agent.critic_target_parameters())]
        self._setup_replay((agent.act_dim,), torch.float32)

    def learner_state(self) -> dict[str, Any]:
        """Networks, targets and optimizers."""
        return {"agent": self.agent.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict()}

    def load_learner_state(self, state: dict[str, Any]) -> None:
        """Restore what ``learner_state`` returned; learning rates come from the config."""
        self.agent.load_state_dict(state["agent"])
        for name in ("actor_opt", "critic_opt"):
            opt = getattr(self, name)
            opt.load_state_dict(state[name])
            opt.lr = self.hp.lr

    def explore(self, feat: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform actions before learning starts, then the actor plus Gaussian noise."""
        if random:
            unit = torch.rand(feat.shape[0], self.agent.act_dim, device=feat.device) * 2 - 1
        else:
            unit = self.agent.noisy(self.agent.actor(feat))
        return self.agent.to_env(unit), unit

    def update(self) -> dict[str, float]:
        """One critic update; every ``policy_delay``: an actor update and the Polyak step of all targets."""
        hp, agent = self.hp, self.agent
        b = self.sample_batch()
        with torch.no_grad():
            smoothing = (torch.randn_like(b["action"]) * hp.target_policy_noise).clamp_(
                -hp.target_noise_clip, hp.target_noise_clip)
            next_t = b["next_obs_target"]
            next_action = (agent.actor_target(next_t) + smoothing).clamp_(-1.0, 1.0)
            next_q = torch.min(agent.q1_target(next_t, next_action), agent.q2_target(next_t, next_action))
            target = td3_target(b["reward"], b["terminated"], next_q, hp.gamma)
        qf1_loss = td_loss(agent.q1(b["obs"], b["action"]), target)
        qf2_loss = td_loss(agent.q2(b["obs"], b["action"]), target)
        self.critic_opt.zero_grad()
        (qf1_loss + qf2_loss).backward()
        self.critic_opt.step()
        self.updates += 1

        out = [qf1_loss.detach(), qf2_loss.detach()]
        if self.updates % hp.policy_delay == 0:
            obs = b["obs"].detach()  # the actor does not train a memory core
            actor_loss = -agent.q1(obs, agent.actor(obs)).mean()
            self.actor_opt.zero_grad()
            # Gradients for the actor only: the critics pass gradients through to the action but
            # skip their own weight gradients (a tenth of the update's arithmetic).
            actor_loss.backward(inputs=self.actor_opt.params)
            self.actor_opt.step()
            out.append(actor_loss.detach())
            polyak_update(self.target_flats, [self.actor_opt.flat, self.critic_opt.flat], hp.tau)
        values = torch.stack(out).tolist()
        return dict(zip(["losses/qf1", "losses/qf2", "losses/actor"], values))


@AGENTS.register("td3", config=TD3Config, summary="TD3 (twin critics, smoothing, delayed actor), continuous actions.")
def make_td3(cfg: Config, run: Any) -> TD3Trainer:
    """Build the TD3 trainer."""
    return TD3Trainer(cfg, run)
