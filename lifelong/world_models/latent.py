"""A latent world model whose sequence backbone is any ``Memory`` (DreamerV3 RSSM, R2I/S4WM, TWM-style).

Per step ``t`` (time-first tensors ``[T, B, ...]``)::

    e_t   = enc(obs_t)                                   # MLP on symlog(obs), or a CNN on images
    x_t   = first_input                     if is_first_t
            [Dense(z_{t-1}), Dense(a_{t-1})] otherwise   # a_{t-1} is also zeroed where is_first_t
    h_t   = backbone(x_t, state, is_first_t)             # the Memory module (gru, s5, transformer, ...)
    prior p(z_t | h_t);  posterior q(z_t | h_t, e_t) (recurrent) or q(z_t | e_t) (nonrecurrent)
    feat_t = [h_t, z_t];  heads: decoder(obs_t), reward, continue

``z`` is ``stoch`` categoricals of ``classes`` classes (1% uniform mix, straight-through
one-hot samples). With a **recurrent** posterior ``z_t`` depends on ``h_t``, which depends
on ``z_{t-1}``, so ``observe`` walks the sequence step by step. With a **nonrecurrent**
posterior every ``z_t`` comes from the encoder first and the backbone then runs once over
the whole sequence (a parallel scan for s5/ffm, banded attention for the transformer): this
is R2I's and S4WM's design and the reason to choose it for those backbones.

**Learned initial state.** A reset gives the backbone its own fresh state (zeros); what is
learned is the first input: at ``is_first`` steps the backbone consumes the learned vector
``first_input`` instead of the embedding of ``(z_{t-1}, a_{t-1})`` (which would carry the
previous episode). ``h_0 = backbone(fresh, first_input)`` is therefore a learned initial feature for
every backbone, playing the part of DreamerV3's learned deter init (``tanh(W)`` passed
through the first GRU step) and R2I's learned initial SSM state.

**Data alignment** (DESIGN.md's replay rows, same-step autoreset)::

    row t:   obs[t]  is_first[t]  action[t]  reward[t]  terminated[t]/truncated[t]  final_obs[t]
    model step t consumes obs[t] and prev_action[t] = action[t-1] (zero where is_first[t])
    reward[t], terminated[t] are results of action[t], i.e. of the transition t -> t+1, so they
    are targets of the reward/continue heads at the features of step t+1:
        reward_head(feat_{t+1}) ~ reward[t],   continue_head(feat_{t+1}) ~ 1 - terminated[t]

Step 0 of a batch and every ``is_first`` step have no reward/continue target (the reward that
led there is in another row or another episode); the last row's reward is predicted from
step T, which lies in the next batch, so it is not trained in this batch unless the episode
ends there.

**Episode ends.** When an episode ends with action[t] (terminated or truncated), obs[t+1] is
already the next episode's first observation and the true last observation is
``final_obs[t]``. The model never predicts across ``is_first``. Instead, each end gets one
*terminal step*: the backbone state after step t consumes the embedding of ``(z_t,
action[t])`` without a reset, the posterior sees ``final_obs[t]``, and that step is trained like any other
(decoder on ``final_obs[t]``, KL) and carries the reward/continue targets ``reward[t]`` and
``1 - terminated[t]``. This is exactly the extra terminal row DreamerV3's replay stores
(``is_last``), computed beside the sequence so that batches stay rectangular and the carried
state is the true one. Only ends followed by ``is_first`` (or at the last row) count.
In the step-by-step path the terminal step branches off the state before the reset. In
the parallel path the state before a reset is not exposed by the ``Memory`` interface, so
the backbone also runs over one or two *lanes*: copies of the sequence in which the reset
row after an end is replaced by the terminal step. Ends of each env alternate between the
two lanes; a lane is wrong only between its terminal step and the next reset, and the next
end it serves starts after that reset, so every terminal step is exact. Cost: the backbone
runs over up to 3x the batch when a batch contains episode ends with ``final_obs``.

KL balancing: ``dyn = max(free_nats, KL(sg(post) || prior))`` and ``rep = max(free_nats,
KL(post || sg(prior)))`` per step (KL summed over the latents), averaged over steps; total
``dyn_scale * dyn + rep_scale * rep``. Defaults are the DreamerV3 paper's 0.5 / 0.1 (the
current reference code uses 1.0 / 0.1; set ``dyn_scale: 1.0`` for that).

**Backbone input.** ``z_{t-1}`` and ``a_{t-1}`` get separate embeddings (Dense -> LayerNorm
-> SiLU, half the width each), concatenated, as in DreamerV3's current RSSM code. With one
Dense over the concatenation the action is one active input in ``stoch + 1`` and its share
of ``x_t`` is small: a GRU backbone then changes its state by about 0.005 between the 4
answers of the cue-recall task, and its reward head never learns that the answer's reward
depends on the action (see docs/benchmarks.md, "World models: cue recall").

Differences from DreamerV3 on purpose: the GRU backbone is torch's fused GRU (not the
LayerNorm block GRU of the reference); backbone widths come from the backbone config, the
``size`` preset sets only the MLP/CNN widths of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import ConfigError, setting
from lifelong.memory.base import Memory, State
from lifelong.registry import MEMORY, WORLD_MODELS
from lifelong.world_models.distributions import (
    TwoHotHead,
    kl_balance,
    straight_through_sample,
    symexp,
    symlog,
    unimix_log_probs,
)
from lifelong.world_models.networks import ConvDecoder, ConvEncoder, dense

# MLP width, MLP layers and CNN depth of each size preset (the backbone has its own config).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 64, "layers": 1, "cnn_depth": 8},
    "small": {"hidden": 256, "layers": 2, "cnn_depth": 32},
    "medium": {"hidden": 512, "layers": 3, "cnn_depth": 48},
}
# Backbones whose default posterior is recurrent (DreamerV3's RSSM); the rest default to nonrecurrent (R2I).
RECURRENT_POSTERIOR_BACKBONES = ("gru", "lstm")

LatentState = tuple  # (backbone state, stoch [B, stoch*classes] of the last step)
Policy = Callable[[torch.Tensor], torch.Tensor]


class LatentActionInput(nn.Module):
    """Backbone input ``[Dense(z), Dense(a)]``: latent and action embedded separately, ``width`` units in all."""

    def __init__(self, stoch_dim: int, action_dim: int, width: int) -> None:
        super().__init__()
        if width < 2:
            raise ValueError(f"world_model.hidden: {width} is too small for the backbone input (at least 2)")
        self.stoch = dense([stoch_dim, width // 2])
        self.action = dense([action_dim, width - width // 2])

    def forward(self, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[..., width]`` from ``stoch [..., S*C]`` and ``action [..., A]``."""
        return torch.cat([self.stoch(stoch), self.action(action)], -1)


@dataclass
class LatentWorldModelConfig:
    """Settings of ``world_model.name: latent``: a DreamerV3-style latent model on any memory backbone."""

    name: str = setting("latent", "World model.", registry="world_models")
    size: Literal["tiny", "small", "medium"] = setting(
        "small", "Width preset of the MLPs/CNNs (tiny: 64 units x 1 layer, CNN depth 8; small: 256 x 2, 32; "
                 "medium: 512 x 3, 48); hidden, layers and cnn_depth override it.")
    backbone: Any = setting({"name": "gru", "hidden": 256},
                            "Sequence backbone (any memory module); keys depend on backbone.name.", registry="memory")
    posterior: Literal["auto", "recurrent", "nonrecurrent"] = setting(
        "auto", "q(z_t | h_t, e_t) (recurrent, DreamerV3; observe runs step by step) or q(z_t | e_t) "
                "(nonrecurrent, R2I/S4WM; the backbone runs once over the whole sequence, a parallel scan "
                "for s5/ffm). auto: recurrent for gru/lstm, nonrecurrent otherwise.")
    stoch: int = setting(32, "Categorical latent variables per step.", low=1)
    classes: int = setting(32, "Classes of each categorical latent.", low=2)
    hidden: int | None = setting(None, "MLP width of encoder, decoder, heads and backbone input (null: from size).",
                                 low=1)
    layers: int | None = setting(None, "Hidden layers of encoder, decoder and reward/continue heads (null: from size).",
                                 low=0)
    cnn_depth: int | None = setting(None, "Channels of the first conv layer for image observations (null: from size).",
                                    low=1)
    unimix: float = setting(0.01, "Uniform mixture on the prior and posterior probabilities.", low=0.0, high=0.99)
    free_nats: float = setting(1.0, "Free bits: each KL term is clamped below at this many nats per step.", low=0.0)
    dyn_scale: float = setting(0.5, "Weight of the dynamics KL (trains the prior); 0.5 paper, 1.0 current code.",
                               low=0.0)
    rep_scale: float = setting(0.1, "Weight of the representation KL (trains the posterior).", low=0.0)
    bins: int = setting(255, "Two-hot bins of the reward head, at linspace(-20, 20, bins) in symlog space.", low=3)
    decoder_scale: float = setting(1.0, "Weight of the reconstruction loss (symlog-MSE vectors, MSE images).",
                                   low=0.0)
    reward_scale: float = setting(1.0, "Weight of the two-hot reward loss.", low=0.0)
    continue_scale: float = setting(1.0, "Weight of the continue (1 - terminated) loss.", low=0.0)

    def validate(self, prefix: str) -> None:
        """Odd bin count, so that the middle bin is exactly zero."""
        if self.bins % 2 == 0:
            raise ConfigError(f"{prefix}bins: {self.bins} is even (allowed: odd ints >= 3; the middle bin is 0)")

    def resolved_posterior(self) -> str:
        """``recurrent`` or ``nonrecurrent`` after resolving ``auto`` by the backbone."""
        if self.posterior != "auto":
            return self.posterior
        return "recurrent" if self.backbone.name in RECURRENT_POSTERIOR_BACKBONES else "nonrecurrent"


@dataclass
class WorldModelOutput:
    """Everything one training pass produces: the loss, scalar metrics, posterior, states and terminal steps."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    posterior: dict[str, torch.Tensor]
    initial_state: LatentState
    last_state: LatentState
    terminal: dict[str, torch.Tensor] | None


@dataclass
class _Terminal:
    """Episode ends inside a batch: where (``time``, ``env`` of each end) and the terminal step's inputs."""

    end: torch.Tensor  # [T, B] bool
    time: torch.Tensor  # [M]
    env: torch.Tensor  # [M]
    embed: torch.Tensor  # [M, E] embedding of final_obs
    action: torch.Tensor  # [M, A] the action that ended the episode


class LatentWorldModel(nn.Module):
    """DreamerV3-style latent world model with a swappable ``Memory`` backbone; see the module docstring."""

    def __init__(self, obs_shape: Sequence[int], action_dim: int, cfg: LatentWorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        preset = SIZES[cfg.size]
        hidden = cfg.hidden if cfg.hidden is not None else preset["hidden"]
        layers = cfg.layers if cfg.layers is not None else preset["layers"]
        depth = cfg.cnn_depth if cfg.cnn_depth is not None else preset["cnn_depth"]
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.image = len(self.obs_shape) == 3
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(f"observation shape {self.obs_shape}: expected a vector [D] or an image [C, H, W]")
        self.action_dim = int(action_dim)
        self.stoch, self.classes = cfg.stoch, cfg.classes
        self.stoch_dim = cfg.stoch * cfg.classes
        self.unimix = cfg.unimix
        self.recurrent_posterior = cfg.resolved_posterior() == "recurrent"

        if self.image:
            self.encoder: nn.Module = ConvEncoder(self.obs_shape, depth)
            embed_dim = self.encoder.output_dim
        else:
            self.encoder, embed_dim = _trunk(self.obs_shape[0], hidden, layers)
        self.input_layer = LatentActionInput(self.stoch_dim, self.action_dim, hidden)
        self.first_input = nn.Parameter(torch.zeros(hidden))
        make_backbone = MEMORY.get(cfg.backbone.name, "backbone.name").factory
        self.backbone: Memory = make_backbone(hidden, cfg.backbone)
        self.deter_dim = self.backbone.output_dim
        self.prior_head = nn.Sequential(dense([self.deter_dim, hidden]), nn.Linear(hidden, self.stoch_dim))
        post_in = self.deter_dim + embed_dim if self.recurrent_posterior else embed_dim
        self.posterior_head = nn.Sequential(dense([post_in, hidden]), nn.Linear(hidden, self.stoch_dim))
        self.feat_dim = self.deter_dim + self.stoch_dim
        if self.image:
            self.decoder: nn.Module = ConvDecoder(self.feat_dim, self.obs_shape, depth)
        else:
            trunk, width = _trunk(self.feat_dim, hidden, layers)
            self.decoder = nn.Sequential(trunk, nn.Linear(width, self.obs_shape[0]))
        trunk, width = _trunk(self.feat_dim, hidden, layers)
        self.reward_head = TwoHotHead(trunk, width, cfg.bins)
        trunk, width = _trunk(self.feat_dim, hidden, layers)
        self.continue_head = nn.Sequential(trunk, nn.Linear(width, 1))

    # ------------------------------------------------------------------ state

    def initial_state(self, batch_size: int, device: torch.device | str) -> LatentState:
        """Fresh state of ``batch_size`` envs; use it with ``is_first`` set on the first step."""
        stoch = torch.zeros(batch_size, self.stoch_dim, device=device, dtype=self.first_input.dtype)
        return (self.backbone.initial_state(batch_size, device), stoch)

    def select_state(self, state: LatentState, index: torch.Tensor) -> LatentState:
        """The state rows of the envs in ``index``."""
        return (self.backbone.select_state(state[0], index), state[1].index_select(0, index))

    def concat_states(self, states: list[LatentState]) -> LatentState:
        """States of several env batches joined along the env dimension."""
        return (self.backbone.concat_states([s[0] for s in states]), torch.cat([s[1] for s in states]))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the sequence backbone (R2I trains an SSM backbone with its own learning rate)."""
        return list(self.backbone.parameters())

    def non_backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the backbone."""
        inside = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in inside]

    # --------------------------------------------------------------- pieces

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """Network input and reconstruction target: symlog of vectors, images in [-0.5, 0.5] (uint8 or [0, 1])."""
        if self.image:
            image = obs.to(self.first_input.dtype)
            return (image / 255.0 if obs.dtype == torch.uint8 else image) - 0.5
        return symlog(obs.to(self.first_input.dtype))

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """Encoder embeddings ``[..., E]`` of observations ``[..., *obs_shape]``."""
        return self.encoder(self.preprocess(obs))

    def decode(self, feat: torch.Tensor) -> torch.Tensor:
        """Predicted observations ``[..., *obs_shape]`` (symexp of vectors; images in [0, 1] scale)."""
        out = self.decoder(feat)
        return out + 0.5 if self.image else symexp(out)

    def predict_reward(self, feat: torch.Tensor) -> torch.Tensor:
        """Expected reward of the transition that led to ``feat`` (i.e. reward[t] from feat_{t+1})."""
        return self.reward_head(feat)

    def predict_continue(self, feat: torch.Tensor) -> torch.Tensor:
        """Probability that the episode continues after the transition that led to ``feat``."""
        return torch.sigmoid(self.continue_head(feat).squeeze(-1))

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return unimix_log_probs(logits.unflatten(-1, (self.stoch, self.classes)), self.unimix)

    def _sample(self, log_probs: torch.Tensor, sample: bool) -> torch.Tensor:
        return straight_through_sample(log_probs, sample).flatten(-2)

    def _inputs(self, stoch_prev: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """Backbone inputs ``[T, B, hidden]``: embedded ``(z_{t-1}, a_{t-1})``, or the learned first input."""
        first = is_first.unsqueeze(-1)
        x = self.input_layer(stoch_prev, prev_action.masked_fill(first, 0.0))
        return torch.where(first, self.first_input, x)

    def prior_features(self, posterior: dict[str, torch.Tensor], sample: bool = False) -> torch.Tensor:
        """``[h_t, z_t ~ prior(h_t)]`` (the mode unless ``sample``): what the model expects before seeing obs_t."""
        prior = self._sample(posterior["prior_log_probs"], sample)
        return torch.cat([posterior["deter"], prior], -1)

    # -------------------------------------------------------------- observe

    def observe(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        is_first: torch.Tensor,
        state: LatentState | None = None,
        *,
        sample: bool = True,
        parallel: bool | None = None,
    ) -> tuple[dict[str, torch.Tensor], LatentState]:
        """Posterior of ``obs [T,B,...]`` given ``prev_action [T,B,A]`` (action[t-1], the action that led to obs[t]).

        ``state`` None starts fresh (then ``is_first[0]`` should be set). Returns the posterior
        dict of ``[T, B, ...]`` tensors (``feat``, ``deter``, ``stoch``, ``post_log_probs``,
        ``prior_log_probs``, ``input`` (backbone inputs), ``is_first``) and the last state.
        ``sample`` False takes modes instead of samples. ``parallel`` (default: whenever the
        posterior is nonrecurrent) runs the backbone once over the sequence.
        """
        if state is None:
            state = self.initial_state(is_first.shape[1], is_first.device)
        posterior, last, _ = self._run(self.embed(obs), prev_action, is_first.bool(), state, sample, parallel, None)
        return posterior, last

    def _run(
        self,
        embed: torch.Tensor,
        prev_action: torch.Tensor,
        is_first: torch.Tensor,
        state: LatentState,
        sample: bool,
        parallel: bool | None,
        terminal: _Terminal | None,
    ) -> tuple[dict[str, torch.Tensor], LatentState, dict[str, torch.Tensor] | None]:
        """Dispatch to the parallel or the step-by-step pass."""
        if prev_action.shape[-1] != self.action_dim:
            raise ValueError(f"actions have {prev_action.shape[-1]} components, the world model expects "
                             f"{self.action_dim} (discrete actions as one-hot vectors)")
        prev_action = prev_action.to(embed.dtype)
        if parallel is None:
            parallel = not self.recurrent_posterior
        if parallel and self.recurrent_posterior:
            raise ValueError("parallel observe needs posterior: nonrecurrent (a recurrent posterior depends on h_t)")
        if parallel:
            return self._run_parallel(embed, prev_action, is_first, state, sample, terminal)
        return self._run_steps(embed, prev_action, is_first, state, sample, terminal)

    def _posterior_log_probs(self, deter: torch.Tensor | None, embed: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([deter, embed], -1) if self.recurrent_posterior else embed
        return self._log_probs(self.posterior_head(inputs))

    def _run_parallel(self, embed, prev_action, is_first, state, sample, terminal):
        """Nonrecurrent posterior for all steps, then one backbone pass (plus terminal lanes if needed)."""
        memory0, stoch0 = state
        post_lp = self._posterior_log_probs(None, embed)
        stoch = self._sample(post_lp, sample)
        stoch_prev = torch.cat([stoch0.unsqueeze(0), stoch[:-1]])
        x = self._inputs(stoch_prev, prev_action, is_first)
        deter, memory = self.backbone(x, memory0, is_first)
        posterior = self._posterior_dict(deter, stoch, post_lp, x, is_first)
        term = None
        if terminal is not None:
            term_deter = self._terminal_lanes(x, is_first, stoch, memory0, terminal)
            term = self._terminal_dict(term_deter, terminal, sample)
        return posterior, (memory, stoch[-1]), term

    def _terminal_lanes(self, x, is_first, stoch, memory0, terminal: _Terminal) -> torch.Tensor:
        """Backbone outputs ``[M, D]`` of the terminal steps, from lanes where the reset after an end is replaced."""
        T, B = is_first.shape
        end = terminal.end.long()
        lane_of = ((end.cumsum(0) - end) % 2)[terminal.time, terminal.env]  # ends of an env alternate lanes
        lanes = 2 if bool((end.sum(0) >= 2).any()) else 1
        x_term = self.input_layer(stoch[terminal.time, terminal.env], terminal.action)
        x_lanes, first_lanes = [], []
        for lane in range(lanes):
            mine = lane_of == lane
            rows, envs = terminal.time[mine] + 1, terminal.env[mine]
            xl = torch.cat([x, x.new_zeros(1, B, x.shape[-1])]).index_put((rows, envs), x_term[mine])
            fl = torch.cat([is_first, is_first.new_ones(1, B)]).index_put(
                (rows, envs), torch.zeros_like(rows, dtype=torch.bool))
            x_lanes.append(xl)
            first_lanes.append(fl)
        h, _ = self.backbone(torch.cat(x_lanes, 1), self.backbone.concat_states([memory0] * lanes),
                             torch.cat(first_lanes, 1))
        return h[terminal.time + 1, lane_of * B + terminal.env]

    def _run_steps(self, embed, prev_action, is_first, state, sample, terminal):
        """Step-by-step pass: the backbone consumes one step at a time (needed by a recurrent posterior)."""
        memory, stoch_prev = state
        T, B = is_first.shape
        precomputed = None
        if not self.recurrent_posterior:
            post_all = self._posterior_log_probs(None, embed)
            precomputed = (post_all, self._sample(post_all, sample))
        term_rows: dict[int, slice] = {}  # row -> its ends' slice of the (time-sorted) terminal rows
        if terminal is not None:
            for index, time in enumerate(terminal.time.tolist()):
                start = term_rows.get(time + 1, slice(index, index)).start
                term_rows[time + 1] = slice(start, index + 1)
        term_parts: list[torch.Tensor] = []
        deters, stochs, post_lps, xs = [], [], [], []
        for t in range(T + 1):
            if t in term_rows:
                term_parts.append(self._terminal_step(memory, stoch_prev, terminal, term_rows[t]))
            if t == T:
                break
            x = self._inputs(stoch_prev.unsqueeze(0), prev_action[t:t + 1], is_first[t:t + 1])
            deter, memory = self.backbone(x, memory, is_first[t:t + 1])
            if precomputed is None:
                post_lp = self._posterior_log_probs(deter, embed[t:t + 1])
                stoch = self._sample(post_lp, sample)
            else:
                post_lp, stoch = precomputed[0][t:t + 1], precomputed[1][t:t + 1]
            deters.append(deter)
            stochs.append(stoch)
            post_lps.append(post_lp)
            xs.append(x)
            stoch_prev = stoch[0]
        stoch = torch.cat(stochs)
        posterior = self._posterior_dict(torch.cat(deters), stoch, torch.cat(post_lps), torch.cat(xs), is_first)
        term = self._terminal_dict(torch.cat(term_parts), terminal, sample) if terminal is not None else None
        return posterior, (memory, stoch[-1]), term

    def _terminal_step(self, memory: State, stoch_prev: torch.Tensor, terminal: _Terminal, mine: slice) -> torch.Tensor:
        """Backbone outputs ``[m, D]`` of the terminal steps ``mine`` (ends of one row), from the pre-reset state."""
        envs = terminal.env[mine]
        action = torch.zeros(stoch_prev.shape[0], self.action_dim, dtype=stoch_prev.dtype, device=stoch_prev.device)
        action = action.index_put((envs,), terminal.action[mine])
        x = self.input_layer(stoch_prev, action).unsqueeze(0)
        no_reset = torch.zeros(1, x.shape[1], dtype=torch.bool, device=x.device)
        deter, _ = self.backbone(x, memory, no_reset)
        return deter[0, envs]

    def _posterior_dict(self, deter, stoch, post_lp, x, is_first) -> dict[str, torch.Tensor]:
        prior_lp = self._log_probs(self.prior_head(deter))
        return {"deter": deter, "stoch": stoch, "feat": torch.cat([deter, stoch], -1), "post_log_probs": post_lp,
                "prior_log_probs": prior_lp, "input": x, "is_first": is_first}

    def _terminal_dict(self, deter: torch.Tensor, terminal: _Terminal, sample: bool) -> dict[str, torch.Tensor]:
        post_lp = self._posterior_log_probs(deter, terminal.embed)
        stoch = self._sample(post_lp, sample)
        return {"deter": deter, "stoch": stoch, "feat": torch.cat([deter, stoch], -1), "post_log_probs": post_lp,
                "prior_log_probs": self._log_probs(self.prior_head(deter)), "time": terminal.time,
                "env": terminal.env}

    # ------------------------------------------------------------------ loss

    def loss(self, batch: dict[str, torch.Tensor], state: LatentState | None = None) -> tuple[torch.Tensor, dict]:
        """``(scalar loss, metrics)`` of a batch of replay rows; see ``compute_loss``."""
        out = self.compute_loss(batch, state)
        return out.loss, out.metrics

    def compute_loss(
        self,
        batch: dict[str, torch.Tensor],
        state: LatentState | None = None,
        *,
        sample: bool = True,
        parallel: bool | None = None,
    ) -> WorldModelOutput:
        """World-model loss of replay rows ``[T, B, ...]``: obs, action, reward, terminated, is_first.

        Optional keys: ``truncated`` and ``final_obs`` (train terminal steps, the only place
        termination is learned), ``prev_action [B, A]`` (the action before row 0, used with a
        carried ``state``; zeros if absent). ``state`` None treats row 0 as an episode start.
        The reward/continue targets of step t+1 are reward[t] and 1 - terminated[t].
        """
        obs, is_first = batch["obs"], batch["is_first"].bool()
        action = batch["action"].to(self.first_input.dtype)
        reward = batch["reward"].to(action.dtype)
        terminated = batch["terminated"].bool()
        T, B = is_first.shape
        if state is None:
            is_first = is_first.clone()
            is_first[0] = True
            state = self.initial_state(B, is_first.device)
        prev0 = batch.get("prev_action")
        prev0 = action.new_zeros(B, action.shape[-1]) if prev0 is None else prev0.to(action.dtype)
        prev_action = torch.cat([prev0.unsqueeze(0), action[:-1]])

        embed = self.embed(obs)
        terminal = self._find_terminal(batch, is_first, terminated, action)
        posterior, last_state, term = self._run(embed, prev_action, is_first, state, sample, parallel, terminal)

        feat = posterior["feat"]
        recon = self._reconstruction_loss(feat, obs)  # [T, B]
        dyn, rep, kl = kl_balance(posterior["post_log_probs"], posterior["prior_log_probs"], self.cfg.free_nats)
        has_target = ~is_first[1:]  # step t+1 carries reward[t] unless it starts an episode
        reward_loss = self.reward_head.loss(feat[1:], reward[:-1]) * has_target
        cont_target = 1.0 - terminated[:-1].to(feat.dtype)
        cont_logits = self.continue_head(feat[1:]).squeeze(-1)
        cont_loss = F.binary_cross_entropy_with_logits(cont_logits, cont_target, reduction="none") * has_target
        steps = T * B
        targets = has_target.sum()
        sums = {"recon": recon.sum(), "dyn": dyn.sum(), "rep": rep.sum(), "kl": kl.sum(),
                "reward": reward_loss.sum(), "cont": cont_loss.sum()}
        if term is not None:
            t, b = term["time"], term["env"]
            tfeat = term["feat"]
            t_dyn, t_rep, t_kl = kl_balance(term["post_log_probs"], term["prior_log_probs"], self.cfg.free_nats)
            t_cont = F.binary_cross_entropy_with_logits(
                self.continue_head(tfeat).squeeze(-1), 1.0 - terminated[t, b].to(feat.dtype), reduction="none")
            sums["recon"] = sums["recon"] + self._reconstruction_loss(tfeat, batch["final_obs"][t, b]).sum()
            sums["dyn"] = sums["dyn"] + t_dyn.sum()
            sums["rep"] = sums["rep"] + t_rep.sum()
            sums["kl"] = sums["kl"] + t_kl.sum()
            sums["reward"] = sums["reward"] + self.reward_head.loss(tfeat, reward[t, b]).sum()
            sums["cont"] = sums["cont"] + t_cont.sum()
            steps += t.shape[0]
            targets = targets + t.shape[0]
        targets = targets.clamp(min=1)
        means = {k: v / (targets if k in ("reward", "cont") else steps) for k, v in sums.items()}
        cfg = self.cfg
        loss = (cfg.decoder_scale * means["recon"] + cfg.reward_scale * means["reward"]
                + cfg.continue_scale * means["cont"] + cfg.dyn_scale * means["dyn"] + cfg.rep_scale * means["rep"])
        metrics = {f"wm_{k}": v.detach() for k, v in means.items()}
        metrics["wm_loss"] = loss.detach()
        metrics["wm_post_entropy"] = _entropy(posterior["post_log_probs"]).detach()
        metrics["wm_prior_entropy"] = _entropy(posterior["prior_log_probs"]).detach()
        return WorldModelOutput(loss, metrics, posterior, state, last_state, term)

    def _find_terminal(self, batch, is_first, terminated, action) -> _Terminal | None:
        """Ends (terminated or truncated at t, followed by is_first or at the last row) with their final_obs."""
        final_obs = batch.get("final_obs")
        if final_obs is None:
            return None
        done = terminated
        if batch.get("truncated") is not None:
            done = done | batch["truncated"].bool()
        next_first = torch.cat([is_first[1:], torch.ones_like(is_first[:1])])
        end = done & next_first
        time, env = end.nonzero(as_tuple=True)
        if time.numel() == 0:
            return None
        return _Terminal(end, time, env, self.embed(final_obs[time, env]), action[time, env])

    def _reconstruction_loss(self, feat: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Squared error of the decoder summed over observation components: symlog space or image pixels."""
        error = (self.decoder(feat) - self.preprocess(obs)).square()
        return error.flatten(feat.dim() - 1).sum(-1)

    # ------------------------------------------------------------- imagine

    @torch.no_grad()
    def start_states(
        self,
        posterior: dict[str, torch.Tensor],
        state: LatentState,
        times: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Detached imagination starts from the posterior at ``times`` (default: every step), flattened to N = K*B.

        ``state`` is the state ``observe`` started from (``WorldModelOutput.initial_state``).
        The backbone state after each chosen step is recomputed from the stored backbone
        inputs, one backbone call per chosen step (each over the steps since the previous
        one), since the ``Memory`` interface returns only the last state. Rows are ordered
        time-major: row ``k * B + b`` is env ``b`` at ``times[k]``.
        """
        x, is_first = posterior["input"], posterior["is_first"]
        T = x.shape[0]
        times = list(range(T)) if times is None else sorted(set(int(t) for t in times))
        if times and not 0 <= times[0] <= times[-1] < T:
            raise ValueError(f"start times {times[0]}..{times[-1]} outside 0..{T - 1}")
        memory, previous, memories = state[0], 0, []
        for t in times:
            _, memory = self.backbone(x[previous:t + 1], memory, is_first[previous:t + 1])
            memories.append(memory)
            previous = t + 1
        index = torch.tensor(times, device=x.device)
        pick = {k: posterior[k].index_select(0, index).flatten(0, 1) for k in ("deter", "stoch", "feat")}
        return {"memory": self.backbone.concat_states(memories), **pick}

    def imagine(
        self, policy: Policy, start: dict[str, Any], horizon: int, sample: bool = True
    ) -> dict[str, torch.Tensor]:
        """Roll the prior forward ``horizon`` steps from ``start`` with ``action_k = policy(feat_k)``.

        Returns ``feat``, ``deter``, ``stoch`` and ``action``, each ``[H+1, N, ...]``: state 0 is
        the start, ``action[k]`` is taken at state k and leads to state k+1 (``action[H]`` is the
        policy's action at the last state); also ``memory``, the backbone state at state H
        (``(memory, stoch[H])`` is the ``LatentState`` to ``observe`` on from there). The
        reward and continuation of ``action[k]`` are
        ``predict_reward(feat[k+1])`` and ``predict_continue(feat[k+1])``, i.e. the
        ``reward[k]``/``cont[k]`` of ``lambda_returns`` with ``value[k] = V(feat[k])``.
        Differentiable through actions and dynamics; the backbone steps with T=1.
        """
        memory, stoch, deter, feat = start["memory"], start["stoch"], start["deter"], start["feat"]
        no_reset = torch.zeros(1, stoch.shape[0], dtype=torch.bool, device=stoch.device)
        feats, stochs, deters, actions = [feat], [stoch], [deter], []
        for _ in range(horizon):
            action = policy(feat)
            actions.append(action)
            x = self.input_layer(stoch, action.to(stoch.dtype)).unsqueeze(0)
            h, memory = self.backbone(x, memory, no_reset)
            deter = h[0]
            stoch = self._sample(self._log_probs(self.prior_head(deter)), sample)
            feat = torch.cat([deter, stoch], -1)
            feats.append(feat)
            stochs.append(stoch)
            deters.append(deter)
        actions.append(policy(feat))
        return {"feat": torch.stack(feats), "deter": torch.stack(deters), "stoch": torch.stack(stochs),
                "action": torch.stack(actions), "memory": memory}


def _trunk(in_dim: int, hidden: int, layers: int) -> tuple[nn.Module, int]:
    """``layers`` dense layers of ``hidden`` units (identity if 0) and the output width."""
    if layers == 0:
        return nn.Identity(), in_dim
    return dense([in_dim] + [hidden] * layers), hidden


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy per step of categoricals ``[..., S, C]`` summed over the latents."""
    return -(log_probs.exp() * log_probs).sum((-2, -1)).mean()


@WORLD_MODELS.register("latent", config=LatentWorldModelConfig,
                       summary="DreamerV3-style latent model (categorical z) on any memory backbone.")
def make_latent_world_model(obs_shape: Sequence[int], action_dim: int, cfg: LatentWorldModelConfig) -> LatentWorldModel:
    """Build the ``latent`` world model for observations of ``obs_shape`` and ``action_dim``-vector actions."""
    return LatentWorldModel(obs_shape, action_dim, cfg)
