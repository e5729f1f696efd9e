"""A gated transformer-XL core (GTrXL) with a sliding-window cache for step-wise acting.

Each layer (Parisotto et al. 2019) is pre-LayerNorm with GRU-type gates in place of the two
residual connections::

    y = MHA(LN(h) -> [cache, LN(h)]);   h = gate1(h, relu(y))
    z = FF(LN(h));                      h = gate2(h, relu(z))

The gate bias (``gate_bias``, GTrXL's 2 by default) starts a fresh layer close to the
identity map, which steadies early RL training. It also scales the attention path at
init by ``sigmoid(-gate_bias)`` (0.12 at 2) per layer; a world model that must learn to look
up one step among many trains its backbone with ``gate_bias: 0`` (docs/benchmarks.md,
"World models: cue recall").

Cache (the recurrent state, env dimension 1): for every layer the attention keys and values
of the last ``window`` steps, ``[window, B, 2 * d_model]`` (so a step costs one projection,
not one per cached step), slot ``j`` holding the step
``window - j`` steps back, plus one ``valid [window, B]`` mask shared by the layers. A slot
is valid only while it belongs to the episode of the newest step: a reset invalidates the
whole cache, so attention never crosses an episode boundary. Inside a call, each step's
episode id is the running count of ``is_first`` (cache slots count as episode 0), and a
key is visible only with the query's id. Because every call keeps
exactly ``window`` slots, the distance between a query and a key is just the difference
of their indices in ``[cache, sequence]``, the same whether a sequence is fed at once or
step by step; that is what makes the two modes agree.

Attention masks: step ``t`` attends to the steps ``t - window .. t`` of its own episode
(causal, no future). One layer therefore sees ``window`` steps back; a stack of L layers
sees up to ``L * window`` steps back through the layers below, as in transformer-XL.

Positions: a learned relative bias per head and distance ``0..window`` added to the
attention logits (zero at init, so the start is position-agnostic). Relative positions
need no step counter in the state and are unchanged by the cache sliding. With
``episode_position`` a learned embedding of each step's index in its episode
(``0..window``; later steps share the last) is added to the input as well: absolute
time, which a relative bias learns only slowly (it must single out one distance from one
row per episode; a world model has to predict *when* an event comes). The index needs no
counter either: the valid cache slots number exactly ``min(steps of the episode so far,
window)``.

Sequence mode is blocked banded attention: queries in blocks of ``S = min(T, window)``
steps attend to the ``window + S`` keys ending at their block, so the cost is
``O(T * (window + S) * d_model)`` per layer (linear in T), not ``O(T^2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.registry import MEMORY


@dataclass
class TransformerConfig:
    """Settings of the ``transformer`` core (GTrXL with a sliding-window cache)."""

    name: str = setting("transformer", "Memory module.", registry="memory")
    d_model: int = setting(64, "Width of the layers (the input is projected to it); the output width.", low=1)
    heads: int = setting(4, "Attention heads; must divide d_model.", low=1)
    layers: int = setting(2, "Transformer layers.", low=1)
    window: int = setting(64, "Past steps each layer attends to (cache length per layer).", low=1)
    ff: int = setting(0, "Feed-forward hidden width; 0 means 4 * d_model.", low=0)
    episode_position: bool = setting(
        False, "Add a learned embedding of each step's index in its episode (0..window, later steps share "
               "the last) to the input: absolute time on top of the relative bias.")
    gate_bias: float = setting(
        2.0, "Initial bias of the GTrXL update gates: 2 (GTrXL's) starts each layer near the identity; "
             "0 opens the attention path at init (what a world-model backbone needs to learn long lookups).")

    def validate(self, prefix: str) -> None:
        """Reject a head count that does not divide d_model."""
        from lifelong.config import ConfigError

        if self.d_model % self.heads:
            raise ConfigError(
                f"{prefix}heads: {self.heads} does not divide d_model={self.d_model} (allowed: divisors of d_model)"
            )


class GRUGate(nn.Module):
    """GTrXL gate ``g(x, y)``: a GRU update of the stream ``x`` by the sublayer output ``y``."""

    def __init__(self, d: int, bias: float) -> None:
        super().__init__()
        self.from_y = nn.Linear(d, 3 * d, bias=False)
        self.from_x = nn.Linear(d, 2 * d, bias=False)
        self.candidate_x = nn.Linear(d, d, bias=False)
        # Positive bias pushes z towards 0, i.e. g(x, y) ~ x: the layer starts as an identity.
        self.update_bias = nn.Parameter(torch.full((d,), float(bias)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gated combination ``(1 - z) * x + z * tanh(W y + U (r * x))``."""
        wr, wz, wh = self.from_y(y).chunk(3, dim=-1)
        ur, uz = self.from_x(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.update_bias)
        h = torch.tanh(wh + self.candidate_x(r * x))
        return (1 - z) * x + z * h


class BandMask:
    """Which keys each query of a blocked sequence may see, shared by all layers of one call.

    Keys live on ``[cache (window), sequence padded to n*S]``; query block ``i`` (steps
    ``i*S .. i*S+S-1``) reads the key span ``[i*S, i*S + window + S)``.
    """

    def __init__(self, valid: torch.Tensor, is_first: torch.Tensor, window: int) -> None:
        T, B = is_first.shape
        device = is_first.device
        self.T, self.window = T, window
        self.block = S = min(T, window)
        self.blocks = n = -(-T // S)
        pad = n * S - T
        episode = is_first.long().cumsum(0)  # cache slots are episode 0: valid ones belong to the newest episode
        key_episode = torch.cat([episode.new_zeros(window, B), episode])
        key_ok = torch.cat([valid, torch.ones_like(is_first)])
        self.last_episode = episode[-1]
        self.key_episode, self.key_ok = key_episode, key_ok  # unpadded, for the next cache
        if pad:
            # Padding keys sit after every real query (masked causally); they are "valid" so
            # padding queries are never fully masked (their outputs are dropped).
            key_episode = torch.cat([key_episode, key_episode[-1:].expand(pad, B)])
            key_ok = torch.cat([key_ok, key_ok.new_ones(pad, B)])
        span = window + S
        k_ep = key_episode.unfold(0, span, S)  # [n, B, span]
        k_ok = key_ok.unfold(0, span, S)
        q_ep = key_episode[window:].reshape(n, S, B).transpose(1, 2)  # [n, B, S]
        i = torch.arange(S, device=device)[:, None]
        j = torch.arange(span, device=device)[None, :]
        distance = window + i - j  # [S, span]: how many steps the key lies behind the query
        causal = (distance >= 0) & (distance <= window)
        same_episode = q_ep[..., :, None] == k_ep[..., None, :]  # [n, B, S, span]
        self.allowed = (same_episode & k_ok[..., None, :] & causal).unsqueeze(2)  # [n, B, 1, S, span]
        self.distance = distance.clamp(0, window)

    def next_valid(self) -> torch.Tensor:
        """Validity of the last ``window`` slots: present and in the newest step's episode."""
        ok = self.key_ok[-self.window :] & (self.key_episode[-self.window :] == self.last_episode)
        return ok


class GTrXLLayer(nn.Module):
    """One gated transformer-XL layer attending over ``[cache, sequence]`` with a band mask."""

    def __init__(self, d: int, heads: int, ff: int, window: int, gate_bias: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.norm_attn = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.relative_bias = nn.Parameter(torch.zeros(heads, window + 1))
        self.gate_attn = GRUGate(d, gate_bias)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Linear(ff, d))
        self.gate_ff = GRUGate(d, gate_bias)

    def forward(self, h: torch.Tensor, cache: torch.Tensor, mask: BandMask) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform ``h [T,B,d]`` given this layer's cached keys/values ``[window,B,2d]``; also return the new ones."""
        T, B, d = h.shape
        H, E, S, n = self.heads, self.head_dim, mask.block, mask.blocks
        z = self.norm_attn(h)
        kv_new = self.key_value(z)  # [T, B, 2d]
        kv = torch.cat([cache, kv_new])  # [window+T, B, 2d]
        pad = n * S - T
        if pad:
            # padding keys lie after every real query (masked causally), padding queries are dropped
            z = torch.cat([z, z.new_zeros(pad, B, d)])
            kv = torch.cat([kv, kv.new_zeros(pad, B, 2 * d)])
        q = self.query(z).view(n, S, B, H, E)
        k, v = kv.view(-1, B, 2, H, E).unbind(2)
        k = k.unfold(0, mask.window + S, S)  # [n, B, H, E, span]
        v = v.unfold(0, mask.window + S, S)
        logits = torch.einsum("nsbhe,nbhej->nbhsj", q / math.sqrt(E), k)
        # Relative-position bias and mask in one additive term; -inf is safe because every
        # query sees at least itself, so no row is fully masked.
        bias = torch.where(mask.allowed, self.relative_bias[:, mask.distance], float("-inf"))
        weights = torch.softmax(logits + bias, dim=-1)
        att = torch.einsum("nbhsj,nbhej->nsbhe", weights, v).reshape(n * S, B, d)[:T]
        h = self.gate_attn(h, F.relu(self.out(att)))
        return self.gate_ff(h, F.relu(self.ff(self.norm_ff(h)))), kv_new


class TransformerMemory(Memory):
    """GTrXL core with a per-layer sliding-window cache; state ``(layer caches, valid)``, env dim 1."""

    recurrent = True
    state_batch_dim = 1

    def __init__(self, input_dim: int, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.window = cfg.window
        self.d_model = d
        self.output_dim = d
        self.embed = nn.Linear(input_dim, d)
        ff = cfg.ff or 4 * d
        self.layers = nn.ModuleList(
            GTrXLLayer(d, cfg.heads, ff, cfg.window, cfg.gate_bias) for _ in range(cfg.layers)
        )
        self.norm_out = nn.LayerNorm(d)
        # zero at init like the relative bias, so enabling it changes nothing until it learns
        self.position = nn.Embedding(cfg.window + 1, d) if cfg.episode_position else None
        if self.position is not None:
            nn.init.zeros_(self.position.weight)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Empty caches: zero keys/values, every slot invalid."""
        caches = tuple(
            torch.zeros(self.window, batch_size, 2 * self.d_model, device=device) for _ in self.layers
        )
        return caches, torch.zeros(self.window, batch_size, dtype=torch.bool, device=device)

    def episode_steps(self, valid: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """Index ``[T, B]`` of each step in its episode, capped at ``window``."""
        T, B = is_first.shape
        t = torch.arange(T, device=is_first.device)[:, None].expand(T, B)
        start = torch.where(is_first, t, torch.full_like(t, -1)).cummax(0).values  # last reset in this call
        carried = valid.sum(0)  # steps of the running episode already cached (at most window)
        return torch.where(start >= 0, t - start, carried + t).clamp(max=self.window)

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Attend over the cached window and the sequence; return outputs and the slid cache."""
        caches, valid = state
        is_first = is_first.to(device=x.device, dtype=torch.bool)
        mask = BandMask(valid, is_first, self.window)
        h = self.embed(x)
        if self.position is not None:
            h = h + self.position(self.episode_steps(valid, is_first))
        new_caches = []
        for layer, cache in zip(self.layers, caches):
            h, kv = layer(h, cache, mask)
            new_caches.append(torch.cat([cache, kv])[-self.window :])
        return self.norm_out(h), (tuple(new_caches), mask.next_valid())


@MEMORY.register(
    "transformer", config=TransformerConfig, summary="Gated transformer-XL (GTrXL) with a sliding-window cache."
)
def make_transformer(input_dim: int, cfg: TransformerConfig) -> TransformerMemory:
    """Build the ``transformer`` core."""
    return TransformerMemory(input_dim, cfg)
