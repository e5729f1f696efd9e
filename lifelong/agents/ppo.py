"""Proximal Policy Optimization (Schulman et al. 2017) on batched envs, read top to bottom.

Policy: ``encoder -> core -> heads``. The encoder flattens the observation, the core is
a ``Memory`` module chosen by ``agent.memory.name`` (``mlp`` here), the heads are a
categorical or a diagonal-Gaussian (state-independent log-std) policy and a value.
Actor and critic have separate cores unless ``share_core`` is set.

Episode boundaries follow DESIGN.md: ``reward[t]`` and the done flags result from
``action[t]``; a truncated step bootstraps from ``V(final_obs[t])`` (folded into its
reward), a terminated one from nothing, and ``obs[t+1]`` after a done is never used
as the successor of ``obs[t]``. GAE is a reverse linear recurrence computed with the
shared scan. The value loss is the plain mean squared error weighted by ``vf_coef``,
and the KL early stop tests ``approx_kl > 1.5 * target_kl`` before each minibatch,
as in Stable-Baselines3, so RL-Zoo hyperparameters carry over unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong.agents.base import Agent, Trainer, action_spec, obs_dim
from lifelong.config import Config, ConfigError, setting
from lifelong.curricula.env import CurriculumEnv, make_training_env
from lifelong.memory.base import Memory, State, detach_state
from lifelong.memory.scan import reverse_linear_scan
from lifelong.optim import FlatAdam
from lifelong.registry import AGENTS, MEMORY


@dataclass
class PPOConfig:
    """Settings of ``agent.name: ppo``."""

    name: str = setting("ppo", "Agent.", registry="agents")
    lr: float = setting(2.5e-4, "Adam learning rate.", low=0.0, low_open=True)
    anneal_lr: bool = setting(True, "Decay the learning rate linearly to 0 over run.total_steps.")
    num_steps: int = setting(128, "Rollout length per env between updates.", low=1)
    minibatch_size: int = setting(256, "Samples per gradient step.", low=1)
    epochs: int = setting(4, "Passes over each rollout.", low=1)
    gamma: float = setting(0.99, "Discount.", low=0.0, high=1.0)
    gae_lambda: float = setting(0.95, "GAE lambda.", low=0.0, high=1.0)
    clip_coef: float = setting(0.2, "Policy ratio clip range.", low=0.0, low_open=True)
    anneal_clip: bool = setting(False, "Decay the clip range linearly to 0 over run.total_steps.")
    clip_vloss: bool = setting(False, "Clip the value update to clip_coef around the old value.")
    ent_coef: float = setting(0.0, "Entropy bonus weight.", low=0.0)
    vf_coef: float = setting(0.5, "Value loss weight.", low=0.0)
    max_grad_norm: float = setting(0.5, "Global gradient-norm clip.", low=0.0, low_open=True)
    norm_adv: bool = setting(True, "Normalise advantages per minibatch.")
    target_kl: float | None = setting(None, "Stop an update's epochs once approx KL exceeds 1.5x this (null: never).")
    adam_eps: float = setting(1e-5, "Adam epsilon.", low=0.0, low_open=True)
    share_core: bool = setting(False, "One core for actor and critic instead of two.")
    ortho_init: bool = setting(True, "Orthogonal init: gain sqrt(2) hidden, 0.01 policy head, 1 value head.")
    log_std_init: float = setting(0.0, "Initial log-std of the Gaussian policy (continuous actions).")
    bptt: int = setting(0, "Recurrent cores: truncated-BPTT length (0: the whole rollout); divides num_steps.",
                        low=0)
    memory: Any = setting({"name": "mlp"}, "Core of the policy; keys depend on memory.name.", registry="memory")

    def check(self, cfg: Config) -> None:
        """A minibatch cannot exceed the rollout (env.num_envs x agent.num_steps); bptt divides num_steps."""
        rollout = cfg.env.num_envs * self.num_steps
        if self.minibatch_size > rollout:
            raise ConfigError(
                f"agent.minibatch_size: {self.minibatch_size} exceeds the rollout size "
                f"env.num_envs*agent.num_steps = {rollout} (allowed: 1..{rollout})"
            )
        if self.bptt and self.num_steps % self.bptt:
            raise ConfigError(
                f"agent.bptt: {self.bptt} does not divide agent.num_steps={self.num_steps} "
                f"(allowed: 0 or a divisor of num_steps)"
            )


class ActorCritic(Agent):
    """``encoder -> core -> heads`` for discrete (categorical) or continuous (Gaussian) actions."""

    def __init__(self, observation_space: Any, action_space: Any, cfg: PPOConfig) -> None:
        super().__init__()
        self.obs_dim = obs_dim(observation_space)
        self.discrete, self.act_dim = action_spec(action_space)
        self.act_shape = tuple(getattr(action_space, "shape", ()) or ())
        make_core = MEMORY.get(cfg.memory.name, "agent.memory.name").factory
        self.actor_core: Memory = make_core(self.obs_dim, cfg.memory)
        self.critic_core: Memory = self.actor_core if cfg.share_core else make_core(self.obs_dim, cfg.memory)
        self.recurrent = bool(self.actor_core.recurrent)
        self.shared = cfg.share_core
        self.policy_head = nn.Linear(self.actor_core.output_dim, self.act_dim)
        self.value_head = nn.Linear(self.critic_core.output_dim, 1)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), cfg.log_std_init)) if not self.discrete else None
        if cfg.ortho_init:
            self._orthogonal_init()

    _no_state = ((), ())

    def _no_reset(self, n: int, device: torch.device) -> torch.Tensor:
        # Memoryless cores ignore is_first; a cached all-False mask saves an allocation per call.
        cached = getattr(self, "_no_reset_cache", None)
        if cached is None or cached.shape[0] != n or cached.device != device:
            cached = self._no_reset_cache = torch.zeros(n, dtype=torch.bool, device=device)
        return cached

    def _orthogonal_init(self) -> None:
        # Memoryless MLP cores get the usual PPO init; memory modules keep their own (S5's HiPPO
        # projections, FFM's gates, attention layers), which they are designed around.
        cores = [c for c in (self.actor_core, self.critic_core) if not c.recurrent]
        for module in (m for core in cores for m in core.modules()):
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, math.sqrt(2))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.policy_head.weight, 0.01)
        nn.init.orthogonal_(self.value_head.weight, 1.0)
        nn.init.zeros_(self.policy_head.bias)
        nn.init.zeros_(self.value_head.bias)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Core states of fresh episodes (actor, critic)."""
        return (self.actor_core.initial_state(batch_size, device), self.critic_core.initial_state(batch_size, device))

    def select_state(self, state: State, index: torch.Tensor) -> State:
        """The (actor, critic) state rows of the envs in ``index``."""
        return (self.actor_core.select_state(state[0], index), self.critic_core.select_state(state[1], index))

    def concat_states(self, states: list[State]) -> State:
        """(actor, critic) states of several env batches joined along the env dimension."""
        return (self.actor_core.concat_states([s[0] for s in states]),
                self.critic_core.concat_states([s[1] for s in states]))

    def forward_seq(self, obs: torch.Tensor, state: State, is_first: torch.Tensor):
        """Policy output ``[T, B, A]``, value ``[T, B]`` and last state for observations ``[T, B, ...]``."""
        steps, batch = is_first.shape
        x = obs.reshape(steps, batch, self.obs_dim)  # the encoder: flatten each observation
        actor_state, critic_state = state
        h_actor, actor_state = self.actor_core(x, actor_state, is_first)
        if self.shared:
            h_critic, critic_state = h_actor, actor_state
        else:
            h_critic, critic_state = self.critic_core(x, critic_state, is_first)
        return self.policy_head(h_actor), self.value_head(h_critic).squeeze(-1), (actor_state, critic_state)

    def forward_step(self, obs: torch.Tensor, state: State, is_first: torch.Tensor):
        """Policy output, value and next state for one step of observations ``[B, ...]``."""
        out, value, state = self.forward_seq(obs.unsqueeze(0), state, is_first.view(1, -1))
        return out[0], value[0], state

    def act(self, obs, state, is_first, deterministic: bool = False):
        """Sample (or take the mode of) the policy; extras hold ``log_prob`` and ``value``."""
        out, value, state = self.forward_step(obs, state, is_first)
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            if deterministic:
                action = out.argmax(-1)
            else:
                action = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
            log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        else:
            std = self.log_std.exp()
            action = out if deterministic else out + std * torch.randn_like(out)
            log_prob = _gaussian_log_prob(action, out, self.log_std)
            action = action.view(action.shape[0], *self.act_shape) if self.act_shape else action
        return action, state, {"log_prob": log_prob, "value": value}

    def value(self, obs: torch.Tensor, state: State, is_first: torch.Tensor) -> torch.Tensor:
        """State value ``[B]``."""
        return self.forward_step(obs, state, is_first)[1]

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor, is_first: torch.Tensor | None = None,
                         state: State | None = None):
        """Log-prob, entropy and value of (obs, action) pairs.

        Memoryless cores take a flat batch ``[N, ...]``; recurrent cores take sequences
        ``[T, S, ...]`` with their ``is_first [T, S]`` and start ``state``, and return ``[T, S]``.
        """
        if is_first is None:
            n = obs.shape[0]
            out, value, _ = self.forward_step(obs, self._no_state, self._no_reset(n, obs.device))
        else:
            out, value, _ = self.forward_seq(obs, state, is_first)
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
        else:
            log_prob = _gaussian_log_prob(actions.reshape(*out.shape), out, self.log_std)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(out.shape[:-1])
        return log_prob, entropy, value


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[T, B]``.

    ``next_values[t]`` is the value of the successor of ``obs[t]`` (ignored where
    ``dones[t]``); truncation bootstraps must already be folded into ``rewards``.
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` is solved by the scan.
    """
    not_done = 1.0 - dones.float()
    deltas = rewards + gamma * next_values * not_done - values
    advantages = reverse_linear_scan(gamma * gae_lambda * not_done, deltas)
    return advantages, advantages + values


class PPOTrainer(Trainer):
    """Collects ``num_steps`` from every env, then runs ``epochs`` of clipped-surrogate minibatch updates."""

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        self.hp: PPOConfig = cfg.agent
        self.device = run.device
        self.env = make_training_env(cfg, run)
        self.agent = ActorCritic(self.env.observation_space, self.env.action_space, self.hp).to(self.device)
        self.optimizer = FlatAdam(self.agent.parameters(), lr=self.hp.lr, eps=self.hp.adam_eps,
                                  max_grad_norm=self.hp.max_grad_norm)
        self.iteration = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, env normalisers and the iteration count."""
        return {
            "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "env": self.env.state_dict(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore networks, optimizer and normalisers; the lr comes from the config, not the checkpoint."""
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.lr = self.hp.lr
        self.env.load_state_dict(state["env"])
        self.iteration = int(state["iteration"])

    def env_state(self) -> dict[str, Any]:
        """Normaliser statistics for evaluation."""
        return self.env.state_dict()

    # ------------------------------------------------------------------- loop
    def train(self) -> None:
        """Alternate rollouts and updates until the run's step budget is spent."""
        hp, run, env, agent, dev = self.hp, self.run, self.env, self.agent, self.device
        num_envs, horizon = env.num_envs, hp.num_steps
        batch_size = num_envs * horizon
        hp.check(self.cfg)
        bptt = hp.bptt or horizon
        obs_shape = env.observation_space.shape
        act_shape = () if agent.discrete else (agent.act_dim,)
        buf_obs = torch.zeros((horizon, num_envs, *obs_shape), device=dev)
        buf_act = torch.zeros((horizon, num_envs, *act_shape), device=dev,
                              dtype=torch.long if agent.discrete else torch.float32)
        buf_first = torch.zeros((horizon, num_envs), dtype=torch.bool, device=dev)
        buf_logp = torch.zeros((horizon, num_envs), device=dev)
        buf_val = torch.zeros((horizon, num_envs), device=dev)
        buf_rew = torch.zeros((horizon, num_envs), device=dev)
        buf_done = torch.zeros((horizon, num_envs), dtype=torch.bool, device=dev)

        obs = env.reset(seed=run.env_seed)
        is_first = torch.ones(num_envs, dtype=torch.bool, device=dev)
        state = agent.initial_state(num_envs, dev)
        no_reset = torch.zeros(num_envs, dtype=torch.bool, device=dev)
        total = run.cfg.run.total_steps
        log = run.logger
        clock = time.perf_counter

        while not run.done:
            remaining = max(0.0, 1.0 - run.step / total)
            lr = hp.lr * remaining if hp.anneal_lr else hp.lr
            self.optimizer.lr = lr
            clip = hp.clip_coef * remaining if hp.anneal_clip else hp.clip_coef

            # ---- rollout
            t_env = t_inf = 0.0
            chunk_states = []
            with torch.inference_mode():
                for t in range(horizon):
                    t0 = clock()
                    if agent.recurrent and t % bptt == 0:
                        chunk_states.append(detach_state(state))  # where each BPTT chunk starts
                    buf_obs[t] = obs
                    buf_first[t] = is_first
                    action, state, extras = agent.act(obs, state, is_first)
                    t1 = clock()
                    step = env.step(action)
                    t2 = clock()
                    buf_act[t] = action.view(num_envs, *act_shape)
                    buf_logp[t] = extras["log_prob"]
                    buf_val[t] = extras["value"]
                    buf_rew[t] = step.reward
                    buf_done[t] = step.terminated | step.truncated
                    if bool(step.truncated.any()):
                        # A truncated episode bootstraps from its true last observation, seen from the
                        # memory state that consumed obs[t]; the value is folded into the reward.
                        final_value = agent.value(step.final_obs, state, no_reset)
                        buf_rew[t] += hp.gamma * torch.where(step.truncated, final_value, 0.0)
                    obs, is_first = step.obs, step.is_first
                    log.episodes(step.info.get("episode"))
                    t_inf += clock() - t2 + t1 - t0
                    t_env += t2 - t1
                run.step += batch_size

                t0 = clock()
                last_value = agent.value(obs, state, is_first)
                next_values = torch.cat([buf_val[1:], last_value.unsqueeze(0)])
                advantages, returns = compute_gae(buf_rew, buf_val, next_values, buf_done, hp.gamma, hp.gae_lambda)
                if isinstance(self.env, CurriculumEnv):  # PLR scores episodes by their mean |advantage|
                    self.env.add_scores(advantages.abs(), buf_done)
                t_inf += clock() - t0
            log.add_time("env", t_env)
            log.add_time("inference", t_inf)

            # ---- learn
            t0 = clock()
            fields = (buf_obs, buf_act, buf_logp, buf_val, advantages, returns)
            if agent.recurrent:
                batches = _SequenceBatches(agent, fields, buf_first, chunk_states, bptt, hp.minibatch_size)
            else:
                batches = _FlatBatches(fields, hp.minibatch_size, hp.norm_adv)
            metrics = self._update(batches, returns, buf_val, clip)
            log.add_time("learn", clock() - t0)
            self.iteration += 1
            metrics["charts/learning_rate"] = lr
            run.tick(self, metrics)

    def _update(self, batches: "_FlatBatches | _SequenceBatches", returns: torch.Tensor, old_values: torch.Tensor,
                clip: float) -> dict[str, float]:
        hp, agent = self.hp, self.agent
        log_ratios: list[torch.Tensor] = []
        losses: list[torch.Tensor] = []
        stop = False
        for _ in range(hp.epochs):
            for b_obs, b_act, b_logp, b_val, b_adv, b_ret, b_first, b_state in batches.epoch():
                logp, entropy, values = agent.evaluate_actions(b_obs, b_act, b_first, b_state)
                log_ratio = logp - b_logp
                if hp.target_kl is not None:
                    with torch.no_grad():
                        approx_kl = float(((log_ratio.exp() - 1) - log_ratio).mean())
                    if approx_kl > 1.5 * hp.target_kl:
                        stop = True
                        break
                ratio = log_ratio.exp()
                if hp.norm_adv and not batches.normalised and b_adv.numel() > 1:
                    b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
                pg_loss = torch.max(-b_adv * ratio, -b_adv * ratio.clamp(1 - clip, 1 + clip)).mean()
                if hp.clip_vloss:
                    clipped = b_val + (values - b_val).clamp(-clip, clip)
                    v_loss = torch.max((values - b_ret) ** 2, (clipped - b_ret) ** 2).mean()
                else:
                    v_loss = ((values - b_ret) ** 2).mean()
                ent = entropy.mean()
                loss = pg_loss - hp.ent_coef * ent + hp.vf_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()  # clips to max_grad_norm, then Adam
                log_ratios.append(log_ratio.detach().reshape(-1))
                losses.append(torch.stack([pg_loss, v_loss, ent, loss]).detach())
            if stop:
                break
        if not losses:
            return {}
        # Statistics are computed once per update, not per minibatch, to keep the loop lean.
        lr_all = torch.cat(log_ratios)
        approx_kl = ((lr_all.exp() - 1) - lr_all).mean()
        clip_frac = ((lr_all.exp() - 1.0).abs() > clip).float().mean()
        pg, vl, en, total = torch.stack(losses).mean(0).tolist()
        var_y = returns.var()
        explained = float(1 - (returns - old_values).var() / var_y) if float(var_y) > 0 else float("nan")
        out = {
            "losses/policy_loss": pg,
            "losses/value_loss": vl,
            "losses/entropy": en,
            "losses/approx_kl": float(approx_kl),
            "losses/clip_fraction": float(clip_frac),
            "losses/loss": total,
        }
        if math.isfinite(explained):
            out["losses/explained_variance"] = explained
        return out


class _FlatBatches:
    """Single-step minibatches of a rollout (memoryless cores): shuffled samples each epoch."""

    def __init__(self, fields: tuple[torch.Tensor, ...], minibatch_size: int, norm_adv: bool = True) -> None:
        n = fields[0].shape[0] * fields[0].shape[1]
        self.fields = [f.reshape(n, *f.shape[2:]) for f in fields]
        self.n, self.size = n, minibatch_size
        # One minibatch holding the whole rollout needs no shuffling and is normalised once.
        self.normalised = norm_adv and minibatch_size >= n and n > 1
        if self.normalised:
            adv = self.fields[4]
            self.fields[4] = (adv - adv.mean()) / (adv.std() + 1e-8)

    def epoch(self):
        """The minibatches of one epoch."""
        if self.size >= self.n:
            yield (*self.fields, None, None)
            return
        perm = torch.randperm(self.n, device=self.fields[0].device)
        for idx in perm[: self.n - self.n % self.size].view(-1, self.size):
            yield (*(f[idx] for f in self.fields), None, None)


class _SequenceBatches:
    """Sequence minibatches for recurrent cores: the rollout cut into ``bptt``-step chunks, each
    replayed from the memory state stored at its start, minibatches of whole chunks over envs."""

    normalised = False

    def __init__(self, agent: ActorCritic, fields: tuple[torch.Tensor, ...], is_first: torch.Tensor,
                 chunk_states: list, bptt: int, minibatch_size: int) -> None:
        horizon, num_envs = is_first.shape
        chunks = horizon // bptt

        def to_sequences(x: torch.Tensor) -> torch.Tensor:
            # [T, B, ...] -> [bptt, chunks * B, ...]; sequence j = chunk * B + env
            x = x.reshape(chunks, bptt, num_envs, *x.shape[2:]).transpose(0, 1)
            return x.reshape(bptt, chunks * num_envs, *x.shape[3:])

        self.fields = [to_sequences(f) for f in fields]
        self.is_first = to_sequences(is_first)
        self.states = agent.concat_states(chunk_states) if len(chunk_states) > 1 else chunk_states[0]
        self.agent = agent
        self.num_seqs = chunks * num_envs
        self.per_batch = max(1, min(self.num_seqs, minibatch_size // bptt))

    def epoch(self):
        """The minibatches of one epoch: shuffled groups of whole sequences."""
        perm = torch.randperm(self.num_seqs, device=self.is_first.device)
        for start in range(0, self.num_seqs - self.per_batch + 1, self.per_batch):
            idx = perm[start : start + self.per_batch]
            yield (*(f[:, idx] for f in self.fields), self.is_first[:, idx], self.agent.select_state(self.states, idx))


@AGENTS.register("ppo", config=PPOConfig, summary="PPO, discrete and continuous actions, MLP core.")
def make_ppo(cfg: Config, run: Any) -> PPOTrainer:
    """Build the PPO trainer."""
    return PPOTrainer(cfg, run)
