"""Dreamer-style imagination agent (DreamerV3, Hafner et al. 2023; R2I, Samsami et al. 2024 for SSM backbones).

Parts (``agent.name: dreamer``):

* **World model**: ``LatentWorldModel`` (``agent.world_model``, any memory backbone under
  ``agent.world_model.backbone``): GRU/LSTM give DreamerV3's RSSM with a recurrent
  posterior, s5/ffm/transformer/hcam R2I-style models with a nonrecurrent posterior (one
  parallel pass over each training window). Trained on windows ``[L, B]`` of a
  ``SequenceReplay`` (each window starts from a fresh state, as DreamerV3's replay without
  stored latents); episode ends are trained from ``final_obs`` as terminal steps.
* **Imagination**: from every posterior state of the batch (``L * B`` starts,
  ``start_states``) the prior is rolled ``horizon`` (15) steps with the actor. With states
  ``s_0 .. s_H``, ``reward[k] = reward_head(feat_{k+1})``, ``cont[k] = mode of
  continue_head(feat_{k+1})`` and ``value[k] = critic(feat_k)``, the lambda-returns
  ``R_k`` (lambda 0.95, gamma 1 - 1/333) are the returns of ``s_k``. ``cont`` is the
  head's probability instead with ``imagined_continue: probability`` (DreamerV2's expected
  discount): a risk of ending that the model puts below 50% then still lowers the return.
  Each state is weighted by ``w_k = prod_{j<k} gamma * cont[j]`` (``w_0 = 1``): states after
  a predicted end count for nothing.
* **Return normalisation**: ``ReturnNormalizer`` (EMA 0.01 of the 5th/95th percentiles of
  ``R``), ``scale = max(1, P95 - P5)``; advantages are ``(R_k - V(s_k)) / scale``.
* **Critic**: two-hot over ``linspace(-20, 20, 255)`` in symlog space (the prediction is
  ``symexp`` of the expected bin) with a zero-initialised output layer, trained toward
  ``sg(R_k)`` on ``sg(feat_k)``, plus ``slow_reg`` times the two-hot loss toward the slow
  critic's prediction; the slow critic is an EMA (``slow_critic_rate`` 0.02 per update) of
  the critic. The returns bootstrap from the (fast) critic, as in the
  reference code.
* **Actor** on ``sg(feat)``: discrete actions are a categorical with 1% uniform mix
  (straight-through one-hot samples feed the dynamics) trained by REINFORCE,
  ``-log pi(a_k|s_k) sg(adv_k) - eta H``; continuous (Box) actions are DreamerV3's bounded
  Normal (mean ``tanh``, std in ``[min_std, max_std]``), clipped to the box (straight-through)
  and trained by backpropagating the normalised return through the world model,
  ``-(R_k - sg(V_k)) / scale - eta H``. Entropy scale ``eta`` 3e-4.
* **Optimisers** (FlatAdam): model (non-backbone) ``model_lr``, backbone ``backbone_lr`` (R2I:
  1e-4 for the SSM; null: ``model_lr``), actor and critic; global-norm clipping per
  optimiser (1000 for the model, 100 for actor and critic).
* **Acting**: ``act`` runs the posterior one step (``observe`` with T=1) from the state
  ``(world-model state, previous action)``; the previous action is zeroed at ``is_first``.
  Exploration samples the posterior and the policy; deterministic evaluation takes modes.
* **Schedule**: before ``learning_starts`` env steps actions are uniform; after it,
  ``train_ratio`` replayed steps per env step, i.e. ``train_ratio / (batch_size *
  sequence_length)`` updates per env step, run in bursts every ``train_every`` env steps
  (fractions carry over).

Metrics: ``losses/world_model``, ``losses/actor``, ``losses/critic``;
``world_model/{recon,reward,cont,dyn,rep,kl,post_entropy,prior_entropy}`` (per-step means of
the loss terms; ``kl`` unclamped); ``dreamer/{return,value,return_scale,actor_entropy,
model_grad_norm}``.

Differences from DreamerV3 on purpose: no replay-value loss on real data for the critic
(``repval`` of later code versions), Adam instead of LaProp/AGC, separate gradient clipping
for backbone and the rest of the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from lifelong.agents.base import Agent, Trainer, action_spec, obs_dim
from lifelong.agents.offpolicy import box_bounds, flat_view, frozen_copy, load_replay, polyak_update
from lifelong.config import Config, ConfigError, setting
from lifelong.curricula.env import make_training_env
from lifelong.memory.base import State
from lifelong.optim import FlatAdam
from lifelong.registry import AGENTS, WORLD_MODELS
from lifelong.replay import SequenceReplay
from lifelong.world_models.distributions import TwoHotHead, straight_through_sample, unimix_log_probs
from lifelong.world_models.latent import SIZES, LatentWorldModel
from lifelong.world_models.networks import dense
from lifelong.world_models.returns import ReturnNormalizer, lambda_returns


@dataclass
class DreamerConfig:
    """Settings of ``agent.name: dreamer``."""

    name: str = setting("dreamer", "Agent.", registry="agents")
    world_model: Any = setting({"name": "latent", "size": "tiny", "backbone": {"name": "gru", "hidden": 128}},
                               "World model (latent); its backbone is world_model.backbone.name.",
                               registry="world_models")
    model_lr: float = setting(1e-4, "Adam learning rate of the world model (outside the backbone).",
                              low=0.0, low_open=True)
    backbone_lr: float | None = setting(None, "Learning rate of the backbone's parameters (R2I's ssm_lr: 1e-4; "
                                        "null: model_lr).", low=0.0, low_open=True)
    actor_lr: float = setting(3e-5, "Adam learning rate of the actor.", low=0.0, low_open=True)
    critic_lr: float = setting(3e-5, "Adam learning rate of the critic.", low=0.0, low_open=True)
    model_eps: float = setting(1e-8, "Adam epsilon of the world model.", low=0.0, low_open=True)
    ac_eps: float = setting(1e-5, "Adam epsilon of actor and critic.", low=0.0, low_open=True)
    model_grad_clip: float = setting(1000.0, "Global gradient-norm clip of the world model.", low=0.0, low_open=True)
    ac_grad_clip: float = setting(100.0, "Global gradient-norm clip of actor and of critic.", low=0.0, low_open=True)
    batch_size: int = setting(16, "Replayed windows per update (B).", low=1)
    sequence_length: int = setting(64, "Steps per replayed window (L).", low=2)
    buffer_size: int = setting(1_000_000, "Replay capacity in env steps (capped by run.total_steps).", low=1)
    learning_starts: int = setting(1024, "Env steps of uniform random actions before learning starts.", low=0)
    train_ratio: float = setting(512.0, "Replayed steps per env step (updates per env step = train_ratio / "
                                 "(batch_size * sequence_length)).", low=0.0, low_open=True)
    train_every: int = setting(1, "Env steps gathered between bursts of updates.", low=1)
    horizon: int = setting(15, "Imagination horizon H.", low=1)
    gamma: float = setting(1.0 - 1.0 / 333.0, "Discount of imagined returns.", low=0.0, high=1.0)
    lam: float = setting(0.95, "Lambda of the lambda-returns.", low=0.0, high=1.0)
    entropy: float = setting(3e-4, "Actor entropy scale eta.", low=0.0)
    imagined_continue: Literal["mode", "probability"] = setting(
        "mode", "Continuation of imagined steps: the continue head's mode (DreamerV3) or its probability "
        "(DreamerV2's expected discount; keeps termination risks below 50% in the returns).")
    unimix: float = setting(0.01, "Uniform mixture on the discrete policy.", low=0.0, high=0.99)
    min_std: float = setting(0.1, "Continuous policy: smallest std.", low=0.0, low_open=True)
    max_std: float = setting(1.0, "Continuous policy: largest std.", low=0.0, low_open=True)
    slow_critic_rate: float = setting(0.02, "EMA rate of the slow critic per update.", low=0.0, high=1.0)
    slow_reg: float = setting(1.0, "Weight of the critic's regularisation toward the slow critic.", low=0.0)
    return_ema_rate: float = setting(0.01, "EMA rate of the return percentiles.", low=0.0, high=1.0, low_open=True)
    hidden: int | None = setting(None, "Actor and critic MLP width (null: world_model.size's).", low=1)
    layers: int | None = setting(None, "Actor and critic hidden layers (null: world_model.size's).", low=1)
    bins: int = setting(255, "Two-hot bins of the critic.", low=3)
    save_replay: bool = setting(False, "Store the replay buffer in checkpoints (exact resume, large files).")

    def check(self, cfg: Config) -> None:
        """World model kind, std bounds and bin count."""
        if self.world_model.name != "latent":
            raise ConfigError(f"agent.world_model.name: {self.world_model.name!r} is not supported by dreamer "
                              "(allowed: latent)")
        if self.min_std >= self.max_std:
            raise ConfigError(f"agent.min_std: {self.min_std} must be below agent.max_std={self.max_std}")
        if self.bins % 2 == 0:
            raise ConfigError(f"agent.bins: {self.bins} is even (allowed: odd ints >= 3; the middle bin is 0)")

    def widths(self) -> tuple[int, int]:
        """(hidden, layers) of actor and critic."""
        preset = SIZES[self.world_model.size]
        return (self.hidden or preset["hidden"], self.layers or max(1, preset["layers"]))


class DreamerActor(nn.Module):
    """Policy on model features: unimix categorical (discrete) or DreamerV3's bounded Normal (continuous)."""

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool, cfg: DreamerConfig) -> None:
        super().__init__()
        hidden, layers = cfg.widths()
        self.discrete = discrete
        self.trunk = dense([feat_dim] + [hidden] * layers)
        self.out = nn.Linear(hidden, action_dim if discrete else 2 * action_dim)
        self.unimix, self.min_std, self.max_std = cfg.unimix, cfg.min_std, cfg.max_std

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Discrete: (log-probs with unimix, None); continuous: (mean in [-1, 1], std)."""
        out = self.out(self.trunk(feat))
        if self.discrete:
            return unimix_log_probs(out, self.unimix), None
        mean, std = out.chunk(2, -1)
        std = (self.max_std - self.min_std) * torch.sigmoid(std + 2.0) + self.min_std
        return torch.tanh(mean), std

    def sample(self, feat: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Model-format actions ``[..., A]``: one-hot (straight-through) or clipped to [-1, 1] (straight-through)."""
        a, b = self(feat)
        if self.discrete:
            return straight_through_sample(a, sample=not deterministic)
        raw = a if deterministic else a + b * torch.randn_like(a)
        return raw + (raw.clamp(-1.0, 1.0) - raw).detach()

    def log_prob_entropy(self, feat: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log pi(action | feat)`` and the policy entropy, each ``[...]``."""
        a, b = self(feat)
        if self.discrete:
            return (a * action).sum(-1), -(a.exp() * a).sum(-1)
        dist = torch.distributions.Normal(a, b)
        return dist.log_prob(action).sum(-1), dist.entropy().sum(-1)


class DreamerAgent(Agent):
    """World model, actor, critic and slow critic; ``act`` filters observations with the posterior."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: DreamerConfig) -> None:
        super().__init__()
        self.discrete, size = action_spec(action_space, "env.id")
        if not self.discrete:
            low, high = box_bounds(action_space, "dreamer")
            self.register_buffer("action_scale", (high - low) / 2)
            self.register_buffer("action_bias", (high + low) / 2)
            self.act_shape = tuple(action_space.shape)
        self.action_dim = size
        if not isinstance(observation_space, gym.spaces.Box):
            obs_dim(observation_space)  # raises the one-line error
        shape = tuple(observation_space.shape)
        self.obs_shape = shape if len(shape) in (1, 3) else (obs_dim(observation_space),)
        self.world_model: LatentWorldModel = WORLD_MODELS.get(cfg.world_model.name, "agent.world_model.name").factory(
            self.obs_shape, size, cfg.world_model)
        feat = self.world_model.feat_dim
        hidden, layers = cfg.widths()
        self.actor = DreamerActor(feat, size, self.discrete, cfg)
        self.critic = TwoHotHead(dense([feat] + [hidden] * layers), hidden, cfg.bins)
        self.slow_critic = frozen_copy(self.critic)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """``(world-model state, previous action [B, A])`` of fresh episodes."""
        prev = torch.zeros(batch_size, self.action_dim, device=device)
        return (self.world_model.initial_state(batch_size, device), prev)

    def observe_step(self, obs: torch.Tensor, state: State, is_first: torch.Tensor,
                     sample: bool = True) -> tuple[torch.Tensor, State]:
        """Features ``[B, F]`` of one step and the world-model state after it (previous action from ``state``)."""
        latent, prev = state
        obs = obs.reshape(obs.shape[0], *self.obs_shape)
        post, latent = self.world_model.observe(obs.unsqueeze(0), prev.unsqueeze(0), is_first.unsqueeze(0), latent,
                                                sample=sample)
        return post["feat"][0], latent

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """Model-format actions ``[B, A]`` to env actions: indices, or rescaled to the box's bounds and shape."""
        if self.discrete:
            return action.argmax(-1)
        env_action = self.action_bias + self.action_scale * action
        return env_action.view(action.shape[0], *self.act_shape)

    def act(self, obs: torch.Tensor, state: State, is_first: torch.Tensor, deterministic: bool = False):
        """Posterior step then the actor; extras hold the model-format ``action`` and the features ``feat``."""
        feat, latent = self.observe_step(obs, state, is_first, sample=not deterministic)
        action = self.actor.sample(feat, deterministic=deterministic)
        return self.to_env(action), (latent, action), {"action": action, "feat": feat}


@torch.no_grad()
def imagined_continuation(world_model: LatentWorldModel, feat: torch.Tensor, how: str) -> torch.Tensor:
    """``cont[k]`` of imagined states ``feat [H, N, F]``: the continue head's mode (0/1) or its probability."""
    prob = world_model.predict_continue(feat)
    return (prob > 0.5).to(prob.dtype) if how == "mode" else prob


def imagination_losses(
    agent: DreamerAgent,
    traj: dict[str, torch.Tensor],
    reward: torch.Tensor,
    cont: torch.Tensor,
    normalizer: ReturnNormalizer,
    cfg: DreamerConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Actor and critic losses of an imagined trajectory (``traj`` from ``imagine``; ``reward``/``cont`` ``[H, N]``).

    ``reward[k]`` and ``cont[k]`` belong to ``action[k]`` (predicted from ``feat[k+1]``);
    values are ``critic(feat[k])`` for ``k = 0..H``. Updates ``normalizer`` with the returns.
    For continuous actions ``traj`` and ``reward`` carry gradients back to the actor.
    """
    feat = traj["feat"]
    value = agent.critic(feat)  # [H+1, N]; gradient into feat only (critic weights are not the actor's inputs)
    returns = lambda_returns(reward, cont, value, cfg.lam, cfg.gamma)  # [H, N], R_k of s_k
    with torch.no_grad():
        discount = cfg.gamma * cont
        weight = torch.cat([torch.ones_like(discount[:1]), discount[:-1]]).cumprod(0)
    normalizer.update(returns)
    scale = normalizer.scale
    base = value[:-1].detach()
    log_prob, entropy = agent.actor.log_prob_entropy(feat[:-1].detach(), traj["action"][:-1].detach())
    if agent.discrete:
        advantage = ((returns - base) / scale).detach()
        actor_objective = log_prob * advantage
    else:
        actor_objective = (returns - base) / scale
    actor_loss = -(weight * (actor_objective + cfg.entropy * entropy)).mean()

    target = returns.detach()
    critic_in = feat[:-1].detach()
    critic_loss = agent.critic.loss(critic_in, target)
    if cfg.slow_reg > 0:
        with torch.no_grad():
            slow = agent.slow_critic(critic_in)
        critic_loss = critic_loss + cfg.slow_reg * agent.critic.loss(critic_in, slow)
    critic_loss = (weight * critic_loss).mean()
    metrics = {"dreamer/return": returns.detach().mean(), "dreamer/value": base.mean(),
               "dreamer/return_scale": scale.detach().clone(), "dreamer/actor_entropy": entropy.detach().mean()}
    return actor_loss, critic_loss, metrics


class DreamerTrainer(Trainer):
    """Collect with the posterior and the actor, store rows in a ``SequenceReplay``, train model then actor-critic."""

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        self.hp: DreamerConfig = cfg.agent
        self.hp.check(cfg)
        self.device = run.device
        self.env = make_training_env(cfg, run)
        hp = self.hp
        self.agent = DreamerAgent(self.env.observation_space, self.env.action_space, hp).to(self.device)
        wm = self.agent.world_model
        backbone_lr = hp.model_lr if hp.backbone_lr is None else hp.backbone_lr
        self.model_opt = FlatAdam(wm.non_backbone_parameters(), lr=hp.model_lr, eps=hp.model_eps,
                                  max_grad_norm=hp.model_grad_clip)
        self.backbone_opt = FlatAdam(wm.backbone_parameters(), lr=backbone_lr, eps=hp.model_eps,
                                     max_grad_norm=hp.model_grad_clip)
        self.actor_opt = FlatAdam(self.agent.actor.parameters(), lr=hp.actor_lr, eps=hp.ac_eps,
                                  max_grad_norm=hp.ac_grad_clip)
        self.critic_opt = FlatAdam(self.agent.critic.parameters(), lr=hp.critic_lr, eps=hp.ac_eps,
                                   max_grad_norm=hp.ac_grad_clip)
        self.slow_flat = flat_view(list(self.agent.slow_critic.parameters()))
        self.normalizer = ReturnNormalizer(rate=hp.return_ema_rate)
        num_envs = self.env.num_envs
        capacity = max(num_envs * hp.sequence_length, min(hp.buffer_size, cfg.run.total_steps))
        self.replay = SequenceReplay(capacity, num_envs, self.agent.obs_shape, (self.agent.action_dim,),
                                     torch.float32, self.device)
        run.logger.write(f"dreamer: SequenceReplay of {capacity} steps, {self.replay.nbytes / 2**20:.1f} MB; "
                         f"world model {sum(p.numel() for p in wm.parameters())} parameters "
                         f"({wm.cfg.backbone.name} backbone, {wm.cfg.resolved_posterior()} posterior)")
        self.updates = 0
        self._update_credit = 0.0
        self._since_train = 0

    @property
    def learning_starts(self) -> int:
        """Env steps before the first update: the configured value and at least one window per env."""
        return max(self.hp.learning_starts, self.hp.sequence_length * self.env.num_envs)

    # ------------------------------------------------------------------ update
    def train_world_model(self, batch: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """One world-model step on replay rows; the loss pass's output and the model's gradient norm."""
        out = self.agent.world_model.compute_loss(batch)
        self.model_opt.zero_grad()
        self.backbone_opt.zero_grad()
        out.loss.backward()
        grad_norm = self.model_opt.step()
        self.backbone_opt.step()
        return out, grad_norm

    def update(self) -> dict[str, float]:
        """One world-model update on a replay batch, then actor and critic on imagination from its posteriors."""
        hp, agent = self.hp, self.agent
        wm = agent.world_model
        out, grad_norm = self.train_world_model(self.replay.sample(hp.batch_size, hp.sequence_length))

        start = wm.start_states(out.posterior, out.initial_state)
        policy = lambda f: agent.actor.sample(f.detach())  # noqa: E731
        # discrete actors learn by REINFORCE, so only continuous ones need gradients through the model
        with torch.set_grad_enabled(not agent.discrete):
            traj = wm.imagine(policy, start, hp.horizon)
            reward = wm.predict_reward(traj["feat"][1:])
        cont = imagined_continuation(wm, traj["feat"][1:], hp.imagined_continue)
        actor_loss, critic_loss, metrics = imagination_losses(agent, traj, reward, cont, self.normalizer, hp)
        self.actor_opt.zero_grad()
        actor_loss.backward(inputs=self.actor_opt.params)  # the model and critic only pass gradients through
        self.actor_opt.step()
        self.critic_opt.zero_grad()
        critic_loss.backward(inputs=self.critic_opt.params)
        self.critic_opt.step()
        polyak_update([self.slow_flat], [self.critic_opt.flat], hp.slow_critic_rate)
        self.updates += 1

        names = ["losses/world_model", "losses/actor", "losses/critic", "dreamer/model_grad_norm"]
        values = [out.loss.detach(), actor_loss.detach(), critic_loss.detach(), grad_norm]
        for key, value in out.metrics.items():
            if key != "wm_loss":
                names.append("world_model/" + key.removeprefix("wm_"))
                values.append(value)
        names += list(metrics)
        values += list(metrics.values())
        return dict(zip(names, torch.stack([v.float().reshape(()) for v in values]).tolist()))

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Networks (with the slow critic), optimizers, normaliser, counters, env state; replay if ``save_replay``."""
        state = {
            "agent": self.agent.state_dict(),
            "model_opt": self.model_opt.state_dict(),
            "backbone_opt": self.backbone_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "env": self.env.state_dict(),
            "updates": self.updates,
            "update_credit": self._update_credit,
            "since_train": self._since_train,
        }
        if self.hp.save_replay:
            state["replay"] = self.replay.state_dict()
            self.run.logger.write(f"dreamer: checkpointing {len(self.replay)} replay steps")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; learning rates come from the config."""
        self.agent.load_state_dict(state["agent"])
        for name in ("model_opt", "backbone_opt", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.normalizer.load_state_dict(state["normalizer"])
        self.env.load_state_dict(state["env"])
        self.updates = int(state["updates"])
        self._update_credit = float(state["update_credit"])
        self._since_train = int(state["since_train"])
        if "replay" in state and self.hp.save_replay:
            load_replay(self.replay, state["replay"])
            self.run.logger.write(f"dreamer: restored {len(self.replay)} replay steps")

    def env_state(self) -> dict[str, Any]:
        """Normaliser statistics for evaluation."""
        return self.env.state_dict()

    # -------------------------------------------------------------------- loop
    def random_actions(self, n: int) -> torch.Tensor:
        """Uniform model-format actions: one-hot indices or uniform in [-1, 1]."""
        agent = self.agent
        if agent.discrete:
            index = torch.randint(agent.action_dim, (n,), device=self.device)
            return F.one_hot(index, agent.action_dim).float()
        return torch.rand(n, agent.action_dim, device=self.device) * 2 - 1

    def train(self) -> None:
        """Collect one step per env, learn when due, tick; until the run's step budget is spent."""
        hp, run, env, agent = self.hp, self.run, self.env, self.agent
        num_envs, log, clock = env.num_envs, run.logger, time.perf_counter
        learning_starts = self.learning_starts
        updates_per_step = hp.train_ratio / (hp.batch_size * hp.sequence_length)
        obs = env.reset(seed=run.env_seed)
        state = agent.initial_state(num_envs, self.device)
        is_first = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        metrics: dict[str, float] = {}
        while not run.done:
            t0 = clock()
            with torch.inference_mode():
                _, (latent, action), _ = agent.act(obs, state, is_first)
                if run.step < learning_starts:
                    action = self.random_actions(num_envs)
                env_action = agent.to_env(action)
            t1 = clock()
            step = env.step(env_action)
            t2 = clock()
            self.replay.add(obs.reshape(num_envs, *agent.obs_shape), action, step.reward.float(), step.terminated,
                            step.truncated, is_first, step.final_obs.reshape(num_envs, *agent.obs_shape))
            obs, state, is_first = step.obs, (latent, action), step.is_first
            log.episodes(step.info.get("episode"))
            run.step += num_envs
            log.add_time("env", t2 - t1)
            log.add_time("inference", clock() - t2 + t1 - t0)
            if run.step >= learning_starts:
                self._since_train += num_envs
                if self._since_train >= hp.train_every:
                    t0 = clock()
                    self._update_credit += updates_per_step * self._since_train
                    self._since_train = 0
                    n = int(self._update_credit)
                    self._update_credit -= n
                    for _ in range(n):
                        metrics = self.update()
                    log.add_time("learn", clock() - t0)
            run.tick(self, metrics)


@AGENTS.register("dreamer", config=DreamerConfig,
                 summary="DreamerV3-style imagination agent on a latent world model with any memory backbone.")
def make_dreamer(cfg: Config, run: Any) -> DreamerTrainer:
    """Build the Dreamer trainer."""
    return DreamerTrainer(cfg, run)
