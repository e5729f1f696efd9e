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

Memory cores (``agent.memory.name`` other than ``mlp``; R2D2-style, Kapturowski et al. 2019):
the agent reads observations through one recurrent core ``obs -> Memory -> feature`` and
its usual networks (actor, critics, Q-head; widths ``head_hidden``) act on features. The
loop carries each env's core state and stores it with every row of a ``SequenceReplay``.
An update samples ``batch_size // sequence_length`` windows of ``burn_in + sequence_length
+ 1`` rows, each starting from its stored state: the first ``burn_in`` rows only refresh
the state (no gradient), the next ``sequence_length`` rows are trained, and row ``t + 1``
gives the bootstrap features of row ``t`` (online core for the next action, Polyak-averaged
target core for the target value). Resets at ``is_first`` happen inside the core. A row
whose episode was truncated bootstraps from the cores' output on its ``final_obs`` after
``obs[t]`` (``obs[t + 1]`` already belongs to the next episode), computed on copies of the
window (``_truncation_bootstrap``). Terminated rows bootstrap from nothing, as always. The critic loss trains the
core; the actor reads detached features (as shared-encoder SAC does).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from lifelong.agents.base import Agent, Trainer, obs_dim
from lifelong.config import Config, ConfigError, setting
from lifelong.curricula.env import make_training_env
from lifelong.memory.mlp import mlp
from lifelong.memory.base import Memory, State, detach_state
from lifelong.registry import MEMORY
from lifelong.replay import SequenceReplay, TransitionReplay, next_observation


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
    sequence_length: int = setting(32, "Memory cores: trained steps per replayed window.", low=1)
    burn_in: int = setting(0, "Memory cores: steps replayed before each window only to refresh its state.",
                           low=0)
    head_hidden: list[int] = setting([256, 256], "Memory cores: hidden widths of the networks on the core's "
                                     "features (with mlp, memory.hidden sizes the networks).")
    head_activation: Literal["tanh", "relu", "elu", "gelu", "silu", "leaky_relu"] = setting(
        "relu", "Memory cores: activation of those networks.")

    def uses_memory(self) -> bool:
        """True for a memory core (sequence replay); False for the standard memoryless networks."""
        return self.memory.name != "mlp"

    def network_widths(self) -> SimpleNamespace:
        """Widths of actor/critic/Q networks: the mlp core's own, or ``head_*`` on top of a memory core."""
        if not self.uses_memory():
            return SimpleNamespace(hidden=list(self.memory.hidden), activation=self.memory.activation,
                                   layer_norm=self.memory.layer_norm)
        return SimpleNamespace(hidden=list(self.head_hidden), activation=self.head_activation, layer_norm=False)

    def check(self, cfg: Config) -> None:
        """Head widths positive."""
        if any(w < 1 for w in self.head_hidden):
            raise ConfigError(f"agent.head_hidden: {self.head_hidden!r} has a width below 1 (allowed: positive ints)")


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


def td_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean squared (or Huber, ``kind="huber"``) TD error."""
    return F.mse_loss(pred, target) if kind == "mse" else F.smooth_l1_loss(pred, target)


class OffPolicyAgent(Agent):
    """What reads observations for an off-policy agent: the flat observation itself, or a memory core.

    Subclasses call ``_init_core`` first and size their networks by the feature width it returns.
    """

    core: Memory | None
    core_target: Memory | None

    def _init_core(self, observation_space: Any, cfg: OffPolicyConfig) -> int:
        """Build the memory core and its frozen target if configured; return the feature width."""
        self.obs_dim = obs_dim(observation_space)
        if cfg.uses_memory():
            self.core = MEMORY.get(cfg.memory.name, "agent.memory.name").factory(self.obs_dim, cfg.memory)
            self.core_target = frozen_copy(self.core)
            return int(self.core.output_dim)
        self.core = self.core_target = None
        return self.obs_dim

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """The core's fresh state (empty without a core)."""
        return () if self.core is None else self.core.initial_state(batch_size, device)

    def encode(self, obs: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Features ``[B, F]`` of one step's observations ``[B, ...]`` and the next core state."""
        x = obs.reshape(obs.shape[0], self.obs_dim)
        if self.core is None:
            return x, state
        y, state = self.core(x.unsqueeze(0), state, is_first.unsqueeze(0))
        return y.squeeze(0), state


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
        self.env = make_training_env(cfg, run)
        self.updates = 0
        self._update_credit = 0.0
        self._since_train = 0
        self.agent: Agent

    def _setup_replay(self, action_shape: tuple[int, ...], action_dtype: torch.dtype) -> None:
        """Allocate the replay (capacity capped by the run's step budget) and log its size.

        Transitions for the memoryless networks; rows with each env's core state for a memory core.
        """
        agent, num_envs = self.agent, self.env.num_envs
        capacity = max(num_envs, min(self.hp.buffer_size, self.cfg.run.total_steps))
        self.obs_dim = agent.obs_dim
        if agent.core is None:
            self.replay = TransitionReplay(capacity, num_envs, (agent.obs_dim,), action_shape, action_dtype,
                                           self.device)
        else:
            window = self.hp.burn_in + self.hp.sequence_length + 1
            capacity = max(capacity, window * num_envs)
            self.replay = SequenceReplay(capacity, num_envs, (agent.obs_dim,), action_shape, action_dtype,
                                         self.device, state_example=agent.initial_state(num_envs, self.device),
                                         state_batch_dim=agent.core.state_batch_dim)
        self.run.logger.write(f"{self.algorithm}: {type(self.replay).__name__} of {capacity} transitions, "
                              f"{self.replay.nbytes / 2**20:.1f} MB")

    @property
    def learning_starts(self) -> int:
        """Env steps before the first update: the configured value, and at least one window per env."""
        if self.agent.core is None:
            return self.hp.learning_starts
        window = self.hp.burn_in + self.hp.sequence_length + 1
        return max(self.hp.learning_starts, window * self.env.num_envs)

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """A training batch in one layout for both kinds of replay, rows flattened to ``[N, ...]``.

        ``obs``: the inputs of the networks at t (features with gradient into the core, for a
        memory core); ``next_obs``: the online inputs at the successor (no gradient);
        ``next_obs_target``: the target network's inputs at the successor; ``action``,
        ``reward``, ``terminated``.
        """
        hp, agent = self.hp, self.agent
        if agent.core is None:
            b = self.replay.sample(hp.batch_size)
            return {"obs": b["obs"], "next_obs": b["next_obs"], "next_obs_target": b["next_obs"],
                    "action": b["action"], "reward": b["reward"], "terminated": b["terminated"]}
        burn, length = hp.burn_in, hp.sequence_length
        windows = max(1, hp.batch_size // length)
        w = self.replay.sample(windows, burn + length + 1)
        obs, first, state = w["obs"], w["is_first"], w["state"]
        with torch.no_grad():
            state_target = state
            if burn:
                _, state = agent.core(obs[:burn], state, first[:burn])
                _, state_target = agent.core_target(obs[:burn], state_target, first[:burn])
            feat_target, _ = agent.core_target(obs[burn:], state_target, first[burn:])
        feat, _ = agent.core(obs[burn:], detach_state(state), first[burn:])
        next_online, next_target = feat[1:].detach(), feat_target[1:]
        truncated = w["truncated"][burn : burn + length]
        if bool(truncated.any()):
            next_online, next_target = self._truncation_bootstrap(w, next_online, next_target)

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(length * windows, *x.shape[2:])

        trained = slice(burn, burn + length)
        return {
            "obs": rows(feat[:-1]),
            "next_obs": rows(next_online),
            "next_obs_target": rows(next_target),
            "action": rows(w["action"][trained]),
            "reward": rows(w["reward"][trained]),
            "terminated": rows(w["terminated"][trained]),
        }

    @torch.no_grad()
    def _truncation_bootstrap(self, w: dict[str, Any], next_online: torch.Tensor,
                              next_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Successor features of truncated rows: the cores' output on ``final_obs[t]`` after ``obs[t]``.

        The window's row ``t + 1`` already starts the next episode, so each truncated row ``t``
        needs its own input: a *lane* is a copy of the window whose row ``t + 1`` is replaced by
        ``final_obs[t]`` without a reset; the core's output there, from the state after
        ``obs[t]``, is exactly the bootstrap feature. A lane is wrong after that row until its
        next reset, which is the next episode end of the window, so ends alternate between two
        lanes by their index: every truncated row's lane is exact where it is read.
        """
        agent, hp = self.agent, self.hp
        burn, length = hp.burn_in, hp.sequence_length
        obs, first, state = w["obs"], w["is_first"], w["state"]
        done = w["terminated"] | w["truncated"]
        end_index = done.long().cumsum(0) - 1  # [W, n]: the index of each end within its window
        for lane in (0, 1):
            # truncated trained rows t whose end goes to this lane; the replaced row is t + 1
            chosen = w["truncated"] & (end_index % 2 == lane)
            chosen[:burn] = False
            chosen[burn + length :] = False
            if not bool(chosen.any()):
                continue
            replaced = torch.zeros_like(chosen)
            replaced[1:] = chosen[:-1]
            lane_obs = torch.where(replaced.view(*replaced.shape, *([1] * (obs.dim() - 2))),
                                   w["final_obs"].roll(1, 0), obs)
            lane_first = first & ~replaced
            online, _ = agent.core(lane_obs, state, lane_first)
            target, _ = agent.core_target(lane_obs, state, lane_first)
            use = chosen[burn : burn + length].unsqueeze(-1)  # trained row t reads the lane at t + 1
            next_online = torch.where(use, online[burn + 1 :], next_online)
            next_target = torch.where(use, target[burn + 1 :], next_target)
        return next_online, next_target

    # --------------------------------------------------------------- to implement
    @abstractmethod
    def explore(self, feat: torch.Tensor, random: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for features ``[B, F]`` (see ``OffPolicyAgent.encode``): (for the env, for the replay)."""

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
        hp, run, env, agent = self.hp, self.run, self.env, self.agent
        num_envs = env.num_envs
        log = run.logger
        clock = time.perf_counter
        learning_starts = self.learning_starts
        sequences = isinstance(self.replay, SequenceReplay)
        obs = env.reset(seed=run.env_seed).reshape(num_envs, self.obs_dim)
        # Each episode in progress restarts its core state at the run's (re)start.
        state = agent.initial_state(num_envs, self.device)
        is_first = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        metrics: dict[str, float] = {}
        while not run.done:
            t0 = clock()
            with torch.inference_mode():
                feat, next_state = agent.encode(obs, state, is_first)
                env_action, stored_action = self.explore(feat, random=run.step < learning_starts)
            t1 = clock()
            step = env.step(env_action)
            t2 = clock()
            reward = step.reward.float()
            if sequences:
                final_obs = step.final_obs.reshape(num_envs, self.obs_dim)
                self.replay.add(obs, stored_action, reward, step.terminated, step.truncated, is_first, final_obs,
                                state=state)
            else:
                next_obs = next_observation(step).reshape(num_envs, self.obs_dim)
                self.replay.add(obs, stored_action, reward, step.terminated, step.truncated, next_obs)
            obs, state, is_first = step.obs.reshape(num_envs, self.obs_dim), next_state, step.is_first
            log.episodes(step.info.get("episode"))
            run.step += num_envs
            self.after_collect()
            log.add_time("env", t2 - t1)
            log.add_time("inference", clock() - t2 + t1 - t0)

            if run.step >= learning_starts:
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
