"""What SAC, TD3 and DQN share: their common settings, the collection loop and replay checkpointing.

The loop (``OffPolicyTrainer.train``) steps every env once per iteration with the algorithm's
exploration policy (uniform random before ``learning_starts``), stores the ``num_envs``
transitions, and once ``train_every`` env steps have gathered runs ``utd`` gradient updates
per gathered env step (fractions carry over). ``utd=1, train_every=1`` is one update per env
step, as SB3's ``train_freq=1, gradient_steps=1``; DQN's RL-Zoo CartPole setting
``train_freq=256, gradient_steps=128`` is ``train_every=256, utd=0.5``.

Targets follow DESIGN.md's episode boundaries: the replay stores ``next_observation(step)``
(the true last observation where an episode ended) and ``terminated`` apart from
``truncated``; a target bootstraps unless ``terminated``.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from lifelong.agents.base import Agent, Trainer
from lifelong.config import Config, ConfigError, setting
from lifelong.envs import make_env
from lifelong.memory.mlp import mlp
from lifelong.replay import TransitionReplay, next_observation


@dataclass
class OffPolicyConfig:
    """Settings every off-policy agent has; each algorithm's dataclass extends these."""

    name: str = setting("", "Agent.", registry="agents")
    gamma: float = setting(0.99, "Discount.", low=0.0, high=1.0)
    batch_size: int = setting(256, "Transitions per gradient update.", low=1)
    buffer_size: int = setting(1_000_000, "Replay capacity in transitions (capped by run.total_steps).", low=1)
    learning_starts: int = setting(5000, "Env steps of uniform random actions before learning starts.", low=0)
    utd: float = setting(1.0, "Gradient updates per env step (update-to-data ratio).", low=0.0, low_open=True)
    train_every: int = setting(1, "Env steps gathered between bursts of updates (SB3's train_freq).", low=1)
    adam_eps: float = setting(1e-8, "Adam epsilon.", low=0.0, low_open=True)
    max_grad_norm: float | None = setting(None, "Global gradient-norm clip per network (null: none).",
                                          low=0.0, low_open=True)
    save_replay: bool = setting(False, "Store the replay buffer in checkpoints (exact resume, large files).")


@torch.no_grad()
def polyak_update(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target``, in place."""
    torch._foreach_lerp_(target, online, tau)


def flat_view(params: list[nn.Parameter]) -> torch.Tensor:
    """Move ``params`` into one contiguous buffer (each becomes a view) and return the buffer."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        offset += n
    return flat


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with gradients off (a target network)."""
    import copy

    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def load_replay(replay: TransitionReplay, state: dict[str, Any]) -> None:
    """Load a saved ``TransitionReplay`` state, also into a buffer of another capacity.

    The capacity follows ``run.total_steps``, which a resume may change: rows are then copied
    oldest first and only the newest ones that fit are kept.
    """
    if state["capacity_per_env"] == replay.capacity_per_env:
        replay.load_state_dict(state)
        return
    if state["num_envs"] != replay.num_envs:
        raise ValueError(f"replay state: num_envs={state['num_envs']} but this run has {replay.num_envs}")
    pos, full = int(state["pos"]), bool(state["full"])
    fields = state["fields"]
    # Chronological order: the oldest row is at ``pos`` once the ring has wrapped.
    ordered = {k: (torch.cat([v[pos:], v[:pos]]) if full else v) for k, v in fields.items()}
    rows = next(iter(ordered.values())).shape[0]
    keep = min(rows, replay.capacity_per_env)
    for name, buf in replay.fields.items():
        buf.zero_()
        buf[:keep].copy_(ordered[name][rows - keep :])
    replay.full = keep == replay.capacity_per_env
    replay.pos = 0 if replay.full else keep


def box_bounds(action_space: gym.Space, algorithm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat float32 ``(low, high)`` of a bounded Box action space; else a one-line ConfigError."""
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"env.id: action space {action_space} is not supported by {algorithm} (allowed: Box)")
    low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ConfigError(f"env.id: {algorithm} needs a bounded action space, got {action_space}")
    return low, high


class QNetwork(nn.Module):
    """``Q(obs, a)`` for continuous ``a`` in ``[-1, 1]``: an MLP on ``[obs, a]`` with the core's widths."""

    def __init__(self, in_dim: int, act_dim: int, core: Any) -> None:
        super().__init__()
        self.net = mlp([in_dim + act_dim, *core.hidden, 1], core.activation, core.layer_norm, last_activation=False)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values ``[B]``."""
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)


class OffPolicyTrainer(Trainer):
    """Collect with the exploration policy, store transitions, run scheduled updates, tick the run.

    Subclasses build ``self.agent`` and their optimizers, then call ``_setup_replay``, and
    implement ``explore`` (actions for the env and for the replay), ``update`` (one
    gradient update, returning metrics) and ``learner_state``/``load_learner_state``.
    """

    algorithm = "off-policy"

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        self.hp = cfg.agent
        self.hp.check(cfg)
        self.device = run.device
        self.env = make_env(cfg.env, seed=run.env_seed, device=self.device)
        self.updates = 0
        self._update_credit = 0.0
        self._since_train = 0
        self.agent: Agent

    def _setup_replay(self, obs_dim: int, action_shape: tuple[int, ...], action_dtype: torch.dtype) -> None:
        """Allocate the transition replay (capacity capped by the run's step budget) and log its size."""
        capacity = max(self.env.num_envs, min(self.hp.buffer_size, self.cfg.run.total_steps))
        self.obs_dim = obs_dim
        self.replay = TransitionReplay(capacity, self.env.num_envs, (obs_dim,), action_shape, action_dtype,
                                       self.device)
        self.run.logger.write(f"{self.algorithm}: replay buffer {capacity} transitions, "
                              f"{self.replay.nbytes / 2**20:.1f} MB")

    # --------------------------------------------------------------- to implement
    @abstractmethod
    def explore(self, obs: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for ``obs [B, obs_dim]``: (as the env takes them, as the replay stores them)."""

    @abstractmethod
    def update(self) -> dict[str, float]:
        """One gradient update from a replay sample; returns scalar metrics."""

    def after_collect(self) -> None:
        """Called once per iteration after ``run.step`` has advanced (DQN's target schedule)."""

    @abstractmethod
    def learner_state(self) -> dict[str, Any]:
        """Networks, targets and optimizers."""

    @abstractmethod
    def load_learner_state(self, state: dict[str, Any]) -> None:
        """Restore what ``learner_state`` returned (learning rates come from the config)."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Learner state, env normalisers, counters; the replay if ``save_replay``."""
        state = {
            "learner": self.learner_state(),
            "env": self.env.state_dict(),
            "updates": self.updates,
            "update_credit": self._update_credit,
            "since_train": self._since_train,
        }
        if self.hp.save_replay:
            state["replay"] = self.replay.state_dict()
            mb = sum(t.numel() * t.element_size() for t in state["replay"]["fields"].values()) / 2**20
            self.run.logger.write(f"{self.algorithm}: checkpointing {len(self.replay)} replay transitions "
                                  f"({mb:.1f} MB)")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.load_learner_state(state["learner"])
        self.env.load_state_dict(state["env"])
        self.updates = int(state["updates"])
        self._update_credit = float(state.get("update_credit", 0.0))
        self._since_train = int(state.get("since_train", 0))
        if "replay" in state and self.hp.save_replay:
            load_replay(self.replay, state["replay"])
            self.run.logger.write(f"{self.algorithm}: restored {len(self.replay)} replay transitions")

    def env_state(self) -> dict[str, Any]:
        """Normaliser statistics for evaluation."""
        return self.env.state_dict()

    # ------------------------------------------------------------------- loop
    def train(self) -> None:
        """Collect one step per env, learn when due, tick; until the run's step budget is spent."""
        hp, run, env = self.hp, self.run, self.env
        num_envs = env.num_envs
        log = run.logger
        clock = time.perf_counter
        obs = env.reset(seed=run.env_seed).reshape(num_envs, self.obs_dim)
        metrics: dict[str, float] = {}
        while not run.done:
            t0 = clock()
            with torch.inference_mode():
                env_action, stored_action = self.explore(obs, random=run.step < hp.learning_starts)
            t1 = clock()
            step = env.step(env_action)
            t2 = clock()
            next_obs = next_observation(step).reshape(num_envs, self.obs_dim)
            self.replay.add(obs, stored_action, step.reward.float(), step.terminated, step.truncated, next_obs)
            obs = step.obs.reshape(num_envs, self.obs_dim)
            log.episodes(step.info.get("episode"))
            run.step += num_envs
            self.after_collect()
            log.add_time("env", t2 - t1)
            log.add_time("inference", clock() - t2 + t1 - t0)

            if run.step >= hp.learning_starts:
                self._since_train += num_envs
                if self._since_train >= hp.train_every:
                    t0 = clock()
                    self._update_credit += hp.utd * self._since_train
                    self._since_train = 0
                    n = int(self._update_credit)
                    self._update_credit -= n
                    for _ in range(n):
                        metrics = self.update()
                    log.add_time("learn", clock() - t0)
            run.tick(self, metrics)
