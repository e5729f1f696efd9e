"""DQN (Mnih et al. 2015) with double-Q targets (van Hasselt et al. 2016), for discrete actions.

MLP Q-network (``agent.memory.name: mlp``) or a Q-head on a memory core with sequence
replay (see ``lifelong.agents.offpolicy``).

* Acting: epsilon-greedy; epsilon falls linearly from ``exploration_initial_eps`` to
  ``exploration_final_eps`` over the first ``exploration_fraction`` of ``run.total_steps``
  (as Stable-Baselines3 schedules it), and stays there. Evaluation is greedy.
* Target (``double: true``): ``r + gamma * (1 - terminated) * Q_targ(s', argmax_a Q(s', a))``
  with ``s' = next_observation(step)``: a truncated step bootstraps from its true last
  observation, a terminated one from nothing. ``double: false`` gives the original
  ``max_a Q_targ(s', a)``.
* Loss: Huber (smooth L1, as SB3) or MSE; gradient norm clipped at ``max_grad_norm``.
* Target network: every ``target_update_every`` env steps, ``Q_targ <- tau * Q + (1 - tau) * Q_targ``
  (``tau: 1`` is the hard copy of the paper).

Collection and the update schedule are the shared off-policy loop (``lifelong.agents.offpolicy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from lifelong.agents.offpolicy import (
    OffPolicyAgent,
    OffPolicyConfig,
    OffPolicyTrainer,
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
class DQNConfig(OffPolicyConfig):
    """Settings of ``agent.name: dqn`` (defaults: Stable-Baselines3's DQN, plus double-Q targets)."""

    name: str = setting("dqn", "Agent.", registry="agents")
    lr: float = setting(1e-4, "Adam learning rate.", low=0.0, low_open=True)
    batch_size: int = setting(32, "Transitions per gradient update.", low=1)
    learning_starts: int = setting(100, "Env steps of uniform random actions before learning starts.", low=0)
    train_every: int = setting(4, "Env steps gathered between bursts of updates (SB3's train_freq).", low=1)
    utd: float = setting(0.25, "Gradient updates per env step (SB3: gradient_steps / train_freq).",
                         low=0.0, low_open=True)
    max_grad_norm: float | None = setting(10.0, "Global gradient-norm clip (null: none).", low=0.0, low_open=True)
    double: bool = setting(True, "Double-Q target: the online network picks the next action.")
    loss: Literal["huber", "mse"] = setting("huber", "TD loss.")
    tau: float = setting(1.0, "Target update coefficient (1: hard copy).", low=0.0, high=1.0, low_open=True)
    target_update_every: int = setting(10000, "Env steps between target network updates.", low=1)
    exploration_initial_eps: float = setting(1.0, "Epsilon at the start.", low=0.0, high=1.0)
    exploration_final_eps: float = setting(0.05, "Epsilon after the decay.", low=0.0, high=1.0)
    exploration_fraction: float = setting(0.1, "Fraction of run.total_steps over which epsilon decays.",
                                          low=0.0, high=1.0)
    memory: Any = setting({"name": "mlp", "hidden": [64, 64], "activation": "relu"},
                          "Core: mlp sizes the Q-network; a memory module (gru, s5, ...) reads the observations "
                          "for a Q-head of head_hidden widths (sequence replay).", registry="memory")


def linear_epsilon(step: int, total_steps: int, initial: float, final: float, fraction: float) -> float:
    """Epsilon at env step ``step``: linear from ``initial`` to ``final`` over ``fraction * total_steps``."""
    span = fraction * total_steps
    if span <= 0 or step >= span:
        return final
    return initial + (final - initial) * step / span


def dqn_target(reward: torch.Tensor, terminated: torch.Tensor, next_q_online: torch.Tensor,
               next_q_target: torch.Tensor, gamma: float, double: bool) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * Q_targ(s', a*)`` with ``a*`` from the online (double) or target net."""
    if double:
        best = next_q_online.argmax(-1, keepdim=True)
        next_value = next_q_target.gather(-1, best).squeeze(-1)
    else:
        next_value = next_q_target.max(-1).values
    return reward + gamma * (~terminated).to(reward.dtype) * next_value


class DQNAgent(OffPolicyAgent):
    """Q-network and its target (on a memory core's features if configured); acts epsilon-greedily."""

    def __init__(self, observation_space: Any, action_space: Any, cfg: DQNConfig) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"env.id: action space {action_space} is not supported by dqn (allowed: Discrete)")
        in_dim = self._init_core(observation_space, cfg)
        self.num_actions = int(action_space.n)
        widths = cfg.network_widths()
        self.q = mlp([in_dim, *widths.hidden, self.num_actions], widths.activation, widths.layer_norm,
                     last_activation=False)
        self.q_target = frozen_copy(self.q)
        self.epsilon = float(cfg.exploration_initial_eps)

    def q_parameters(self) -> list[nn.Parameter]:
        """Online core (if any) and Q-head parameters, in the order matching ``target_parameters``."""
        core = [*self.core.parameters()] if self.core is not None else []
        return [*core, *self.q.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        """Target core (if any) and target Q-head parameters."""
        core = [*self.core_target.parameters()] if self.core_target is not None else []
        return [*core, *self.q_target.parameters()]

    def epsilon_greedy(self, feat: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Greedy actions ``[B]`` for features ``[B, F]``, each uniform instead with probability ``epsilon``."""
        greedy = self.q(feat).argmax(-1)
        if epsilon <= 0.0:
            return greedy
        explore = torch.rand(greedy.shape, device=feat.device) < epsilon
        uniform = torch.randint(self.num_actions, greedy.shape, device=feat.device)
        return torch.where(explore, uniform, greedy)

    def act(self, obs, state, is_first, deterministic: bool = False):
        """Greedy if ``deterministic``, else epsilon-greedy with the current schedule value."""
        x, state = self.encode(obs, state, is_first)
        return self.epsilon_greedy(x, 0.0 if deterministic else self.epsilon), state, {}


class DQNTrainer(OffPolicyTrainer):
    """DQN on the shared off-policy loop."""

    algorithm = "dqn"

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        hp: DQNConfig = self.hp
        self.agent = DQNAgent(self.env.observation_space, self.env.action_space, hp).to(self.device)
        self.opt = FlatAdam(self.agent.q_parameters(), lr=hp.lr, eps=hp.adam_eps, max_grad_norm=hp.max_grad_norm)
        self.target_flat = flat_view(self.agent.target_parameters())
        self._setup_replay((), torch.int64)
        self._next_target_update = hp.target_update_every

    def learner_state(self) -> dict[str, Any]:
        """Q-network, target, optimizer and the next target-update step."""
        return {"agent": self.agent.state_dict(), "opt": self.opt.state_dict(),
                "next_target_update": self._next_target_update}

    def load_learner_state(self, state: dict[str, Any]) -> None:
        """Restore what ``learner_state`` returned; the learning rate comes from the config."""
        self.agent.load_state_dict(state["agent"])
        self.opt.load_state_dict(state["opt"])
        self.opt.lr = self.hp.lr
        self._next_target_update = int(state["next_target_update"])

    def explore(self, feat: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform actions before learning starts, then epsilon-greedy on the schedule."""
        hp = self.hp
        self.agent.epsilon = linear_epsilon(self.run.step, self.cfg.run.total_steps, hp.exploration_initial_eps,
                                            hp.exploration_final_eps, hp.exploration_fraction)
        action = self.agent.epsilon_greedy(feat, 1.0 if random else self.agent.epsilon)
        return action, action

    def after_collect(self) -> None:
        """Target update when ``target_update_every`` env steps have passed."""
        if self.run.step >= self._next_target_update:
            polyak_update([self.target_flat], [self.opt.flat], self.hp.tau)
            every = self.hp.target_update_every
            self._next_target_update = (self.run.step // every + 1) * every

    def update(self) -> dict[str, float]:
        """One TD update of the Q-network."""
        hp, agent = self.hp, self.agent
        b = self.sample_batch()
        with torch.no_grad():
            next_q_target = agent.q_target(b["next_obs_target"])
            next_q_online = agent.q(b["next_obs"]) if hp.double else next_q_target
            target = dqn_target(b["reward"], b["terminated"], next_q_online, next_q_target, hp.gamma, hp.double)
        q = agent.q(b["obs"]).gather(-1, b["action"].unsqueeze(-1)).squeeze(-1)
        loss = td_loss(q, target, hp.loss)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        loss_value, q_value = torch.stack([loss.detach(), q.detach().mean()]).tolist()
        return {"losses/td": loss_value, "losses/q_values": q_value, "charts/epsilon": agent.epsilon}


@AGENTS.register("dqn", config=DQNConfig, summary="Double DQN with a target network, discrete actions.")
def make_dqn(cfg: Config, run: Any) -> DQNTrainer:
    """Build the DQN trainer."""
    return DQNTrainer(cfg, run)
