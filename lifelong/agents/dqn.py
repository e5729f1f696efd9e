"""DQN (Mnih et al. 2015) with double-Q targets (van Hasselt et al. 2016), for discrete actions.

Memoryless MLP Q-network (``agent.memory.name: mlp``).

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
from torch.nn import functional as F

from lifelong.agents.base import Agent, obs_dim
from lifelong.agents.offpolicy import OffPolicyConfig, OffPolicyTrainer, flat_view, frozen_copy, polyak_update
from lifelong.config import Config, ConfigError, setting
from lifelong.memory.base import State
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
                          "Hidden layers of the Q-network; only the memoryless mlp core.", registry="memory")

    def check(self, cfg: Config) -> None:
        """Only the memoryless ``mlp`` core."""
        if self.memory.name != "mlp":
            raise ConfigError(f"agent.memory.name: {self.memory.name!r} is not supported by dqn (allowed: mlp)")


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


class DQNAgent(Agent):
    """Q-network and its target; acts epsilon-greedily."""

    def __init__(self, observation_space: Any, action_space: Any, cfg: DQNConfig) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"env.id: action space {action_space} is not supported by dqn (allowed: Discrete)")
        self.obs_dim = obs_dim(observation_space)
        self.num_actions = int(action_space.n)
        core = cfg.memory
        self.q = mlp([self.obs_dim, *core.hidden, self.num_actions], core.activation, core.layer_norm,
                     last_activation=False)
        self.q_target = frozen_copy(self.q)
        self.epsilon = float(cfg.exploration_initial_eps)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """No state."""
        return ()

    def epsilon_greedy(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Greedy actions ``[B]``, each replaced by a uniform one with probability ``epsilon``."""
        greedy = self.q(obs).argmax(-1)
        if epsilon <= 0.0:
            return greedy
        explore = torch.rand(greedy.shape, device=obs.device) < epsilon
        uniform = torch.randint(self.num_actions, greedy.shape, device=obs.device)
        return torch.where(explore, uniform, greedy)

    def act(self, obs, state, is_first, deterministic: bool = False):
        """Greedy if ``deterministic``, else epsilon-greedy with the current schedule value."""
        x = obs.reshape(obs.shape[0], self.obs_dim)
        return self.epsilon_greedy(x, 0.0 if deterministic else self.epsilon), state, {}


class DQNTrainer(OffPolicyTrainer):
    """DQN on the shared off-policy loop."""

    algorithm = "dqn"

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        hp: DQNConfig = self.hp
        self.agent = DQNAgent(self.env.observation_space, self.env.action_space, hp).to(self.device)
        self.opt = FlatAdam(self.agent.q.parameters(), lr=hp.lr, eps=hp.adam_eps, max_grad_norm=hp.max_grad_norm)
        self.target_flat = flat_view([*self.agent.q_target.parameters()])
        self._setup_replay(self.agent.obs_dim, (), torch.int64)
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

    def explore(self, obs: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform actions before learning starts, then epsilon-greedy on the schedule."""
        hp = self.hp
        self.agent.epsilon = linear_epsilon(self.run.step, self.cfg.run.total_steps, hp.exploration_initial_eps,
                                            hp.exploration_final_eps, hp.exploration_fraction)
        action = self.agent.epsilon_greedy(obs, 1.0 if random else self.agent.epsilon)
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
        b = self.replay.sample(hp.batch_size)
        with torch.no_grad():
            next_q_target = agent.q_target(b["next_obs"])
            next_q_online = agent.q(b["next_obs"]) if hp.double else next_q_target
            target = dqn_target(b["reward"], b["terminated"], next_q_online, next_q_target, hp.gamma, hp.double)
        q = agent.q(b["obs"]).gather(-1, b["action"].unsqueeze(-1)).squeeze(-1)
        loss = F.smooth_l1_loss(q, target) if hp.loss == "huber" else F.mse_loss(q, target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        loss_value, q_value = torch.stack([loss.detach(), q.detach().mean()]).tolist()
        return {"losses/td": loss_value, "losses/q_values": q_value, "charts/epsilon": agent.epsilon}


@AGENTS.register("dqn", config=DQNConfig, summary="Double DQN with a target network, discrete actions, MLP.")
def make_dqn(cfg: Config, run: Any) -> DQNTrainer:
    """Build the DQN trainer."""
    return DQNTrainer(cfg, run)
