"""Hierarchical Chunk Attention Memory (HCAM, Lampinen et al. 2021) as a ``Memory`` core.

Each layer is a pre-LayerNorm residual block::

    n = LN(h)                      # n is also what this layer stores, one entry per step
    h = h + W_o [local(n), memory(n)]
    h = h + FF(LN(h))

*Memory read* (as in the published read path): every completed chunk of C steps has a key,
the mean of its contents. A query scores the stored chunks with
``(Wq n) . (Wk sg(key)) / sqrt(F)``, keeps the top k, takes a softmax over those k only,
runs multi-head attention inside each selected chunk with keys and values
``sg(contents + sinusoidal position-in-chunk)`` and sums the k results weighted by the
softmax. Differences from the reference on purpose: masked chunks get weight exactly 0
(the reference's -1e6 fill gives them a uniform share when fewer than k chunks are valid);
F = d_model; the local attention shares the within-chunk query/key/value projections.
Because the stored side is stop-gradient, the key/value projections are applied on the
query side (``q.(Wk c) = (Wk^T q).c``), which is the same function and needs no backward
through the memory gathers.

*Write path* (not released with the paper; ours): the steps of an episode are cut into
chunks of C steps from the episode start; when a step completes a chunk, the chunk is
written to a FIFO of ``capacity`` chunks (after that step has read). A reset
invalidates every stored chunk and drops the partial chunk. *Local attention* covers the
chunk being filled, from its first step up to the query (causal), so step t sees exactly
the chunks completed before t plus its own chunk so far. Stored chunks are stop-gradient
(the paper trains what is stored only through an auxiliary loss); the local path keeps
its gradient.

State (env dimension 0): ``contents [B,L,M,C,D]``, ``summaries [B,L,M,D]``, ``valid [B,M]``
(a slot holds a chunk of the current episode), ``partial [B,L,C,D]`` (the chunk being
filled, left-aligned) and ``fill [B]`` (its length, 0..C-1). Slot order is oldest to newest.

Sequence mode has no Python loop over time or chunks. The stored chunks and every chunk
completed inside the sequence form one bank per env ``[B, M + N, C, D]`` (N = ceil(T/C));
the FIFO as seen by step t is the band of M bank slots starting at the number of chunks
completed before t, so the top-k runs over exactly the M slots a step-by-step run would
hold. Per layer: chunk scoring ``O(T * 2M * F)`` (blocks of C*M queries against 2M keys),
within-chunk reads ``O(T * k * C * D)``, local attention ``O(T * C * D)``, plus the
per-step linear layers; memory ``O(B * T * (k*C*D + M))``. All linear in T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.registry import MEMORY


@dataclass
class HCAMConfig:
    """Settings of the ``hcam`` core (Hierarchical Chunk Attention Memory)."""

    name: str = setting("hcam", "Memory module.", registry="memory")
    d_model: int = setting(64, "Width of the layers (the input is projected to it); the output width.", low=1)
    chunk_size: int = setting(8, "Steps per memory chunk (C).", low=1)
    top_k: int = setting(2, "Chunks each query attends inside (k).", low=1)
    capacity: int = setting(16, "Stored chunks per env (M), first in first out.", low=1)
    heads: int = setting(2, "Heads of the within-chunk and local attention; must divide d_model.", low=1)
    layers: int = setting(1, "HCAM layers, each with its own memory.", low=1)

    def validate(self, prefix: str) -> None:
        """Reject a head count that does not divide d_model."""
        from lifelong.config import ConfigError

        if self.d_model % self.heads:
            raise ConfigError(
                f"{prefix}heads: {self.heads} does not divide d_model={self.d_model} (allowed: divisors of d_model)"
            )


def top_k_chunk_weights(
    logits: torch.Tensor, visible: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the k best visible chunks and their softmax weights (0 for invisible picks).

    ``logits``/``visible`` are ``[..., M]``; returns ``(index [..., k'], weight [..., k'])`` with
    ``k' = min(k, M)``. Weights of visible picks sum to 1; a query with no visible chunk gets
    all-zero weights.
    """
    k = min(k, logits.shape[-1])
    # A finite fill (not -inf) keeps the softmax NaN-free when nothing is visible; exp(-1e9)
    # underflows to exactly 0, so masked picks add nothing next to a visible one.
    top, index = logits.masked_fill(~visible, -1e9).topk(k, dim=-1)
    picked = visible.gather(-1, index)
    return index, torch.softmax(top, dim=-1) * picked


def dense_chunk_weights(index: torch.Tensor, weight: torch.Tensor, slots: int) -> torch.Tensor:
    """Scatter top-k weights back onto all ``slots`` chunks: ``[..., slots]``, zeros elsewhere."""
    return weight.new_zeros(*weight.shape[:-1], slots).scatter(-1, index, weight)


def sinusoid_positions(length: int, dim: int) -> torch.Tensor:
    """Sinusoidal encodings ``[length, dim]`` of positions ``0..length-1``."""
    half = (dim + 1) // 2
    inv_freq = 1e4 ** (-torch.arange(half, dtype=torch.float32) * 2 / dim)
    angle = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)[:, :dim]


def band_logits(query: torch.Tensor, keys: torch.Tensor, band_start: torch.Tensor, width: int, reach: int,
                block: int) -> torch.Tensor:
    """Scores ``query [T,B,F] . keys[b, band_start + m]`` for ``m < width``: ``[T, B, width]``.

    Queries go in blocks of ``block`` steps; within a block the band start grows by at most
    ``reach``, so one dense product against ``width + reach`` keys per block covers every band
    (linear in T, unlike scoring all ``M + T/C`` keys of the bank).
    """
    T, B, F = query.shape
    n = -(-T // block)
    pad = n * block - T
    if pad:
        query = torch.cat([query, query.new_zeros(pad, B, F)])
        band_start = torch.cat([band_start, band_start[-1:].expand(pad, B)])
    first = band_start[::block]  # [n, B] band start of each block's first step
    span = width + reach
    slots = (first[..., None] + torch.arange(span, device=keys.device)).clamp(max=keys.shape[1] - 1)
    rows = torch.arange(B, device=keys.device)[None, :, None]
    window = keys[rows, slots]  # [n, B, span, F]
    q = query.view(n, block, B, F).permute(0, 2, 1, 3)  # [n, B, block, F]
    scores = q @ window.transpose(-1, -2)  # [n, B, block, span]
    offset = band_start.view(n, block, B).permute(0, 2, 1) - first[..., None]  # [n, B, block]
    picked = scores.gather(-1, offset[..., None] + torch.arange(width, device=keys.device))
    return picked.permute(0, 2, 1, 3).reshape(n * block, B, width)[:T]


def gather_rows(bank: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``bank [B, J, ...]`` rows at ``index [T, B, K]`` -> ``[T, B, K, ...]``."""
    rows = torch.arange(bank.shape[0], device=bank.device)[None, :, None]
    return bank[rows, index]


class ChunkPlan:
    """Where each step of one call falls in the chunk structure; shared by all layers.

    Times run over ``[-C, T)``: negative times are the partial chunk from the state,
    right-aligned so that concatenated inputs ``[aligned partial (C), sequence (T)]`` put
    time ``tau`` at index ``tau + C``.
    """

    def __init__(self, is_first: torch.Tensor, fill: torch.Tensor, valid: torch.Tensor, chunk: int) -> None:
        T, B = is_first.shape
        M = valid.shape[1]
        device = is_first.device
        C = self.chunk = chunk
        self.capacity = M
        t = torch.arange(T, device=device)[:, None].expand(T, B)
        last_reset = torch.where(is_first, t, torch.full_like(t, -1)).cummax(0).values
        # The step at which the current chunk's phase 0 falls (may be before the call).
        start = torch.where(last_reset >= 0, last_reset, -fill[None, :])
        phase = self.phase = (t - start) % C  # [T, B]
        complete = phase == C - 1
        episode = is_first.long().cumsum(0)  # stored chunks belong to episode 0
        completed_incl = complete.long().cumsum(0)
        before = completed_incl - complete.long()  # chunks completed before step t
        self.new = N = -(-T // C)  # upper bound on chunks completed in T steps
        dump = torch.full_like(before, N)
        end = torch.zeros(B, N + 1, dtype=torch.long, device=device)
        end.scatter_(1, torch.where(complete, before, dump).T, t.T)  # slot N collects non-completions
        self.end = end[:, :N]  # [B, N] completion time of each new chunk
        n_new = completed_incl[-1]  # [B]
        slot = torch.arange(N, device=device)
        bank_valid = torch.cat([valid, slot[None] < n_new[:, None]], dim=1)  # [B, M+N]
        bank_episode = torch.cat([episode.new_zeros(B, M), episode.T.gather(1, self.end)], dim=1)
        # FIFO as step t sees it: bank slots before .. before + M - 1.
        self.band = before[..., None] + torch.arange(M, device=device)  # [T, B, M]
        # Query blocks for band_logits: over `block` steps at most `reach` chunks complete.
        self.block = min(T, C * M)
        self.reach = (self.block + C - 2) // C
        rows = torch.arange(B, device=device)[None, :, None]
        self.visible = bank_valid[rows, self.band] & (bank_episode[rows, self.band] == episode[..., None])
        # Local attention: window of C steps ending at the query, only its own chunk.
        self.local_visible = torch.arange(C, device=device) >= (C - 1 - phase)[..., None]  # [T, B, C]
        # Slot of the state's partial chunk that fills aligned index j (time j - C).
        partial_slot = torch.arange(C, device=device)[:, None] - C + fill[None, :]  # [C, B]
        self.partial_ok = partial_slot >= 0
        self.partial_slot = partial_slot.clamp(min=0)
        self.key_phase = torch.cat([self.partial_slot, phase])  # [C+T, B] position in chunk of each input
        # Next state.
        self.next_band = n_new[:, None] + torch.arange(M, device=device)  # [B, M]
        self.next_valid = bank_valid.gather(1, self.next_band) & (
            bank_episode.gather(1, self.next_band) == episode[-1][:, None]
        )
        self.next_fill = (phase[-1] + 1) % C
        i = torch.arange(C, device=device)[None, :]
        self.next_partial_ok = i < self.next_fill[:, None]  # [B, C]
        self.next_partial_index = (C + T - self.next_fill[:, None] + i).clamp(max=C + T - 1)  # [B, C]

    def align_partial(self, partial: torch.Tensor) -> torch.Tensor:
        """The state's partial chunk ``[B, C, D]`` as inputs at times ``-C..-1``: ``[C, B, D]``."""
        rows = torch.arange(partial.shape[0], device=partial.device)[None, :]
        aligned = partial[rows, self.partial_slot]
        return aligned * self.partial_ok[..., None]


class HCAMLayer(nn.Module):
    """One HCAM block: local attention over the current chunk plus top-k chunk memory read."""

    def __init__(self, d: int, heads: int, chunk: int, top_k: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.top_k = heads, d // heads, top_k
        self.norm = nn.LayerNorm(d)
        self.chunk_query = nn.Linear(d, d, bias=False)
        self.chunk_key = nn.Linear(d, d, bias=False)
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.register_buffer("position", sinusoid_positions(chunk, d), persistent=False)
        self.last_chunk_weights: torch.Tensor | None = None  # set when record_weights is on
        self.record_weights = False

    def forward(
        self,
        h: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        plan: ChunkPlan,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Transform ``h [T,B,d]`` with memory ``(contents, summaries, partial)``; return h and new memory."""
        contents, summaries, partial = memory
        T, B, d = h.shape
        H, E, C, M = self.heads, self.head_dim, plan.chunk, plan.capacity
        n = self.norm(h)
        stream = torch.cat([plan.align_partial(partial), n])  # [C+T, B, d] inputs at times -C..T-1
        windows = stream.unfold(0, C, 1).permute(0, 1, 3, 2)  # [T+1, B, C, d]; window i covers times i-C..i-1
        rows = torch.arange(B, device=h.device)[:, None]
        new_chunks = windows[plan.end + 1, rows].detach()  # [B, N, C, d]
        bank = torch.cat([contents.detach(), new_chunks], dim=1)  # [B, M+N, C, d]
        bank_keys = torch.cat([summaries.detach(), new_chunks.mean(2)], dim=1)  # [B, M+N, d]

        # Chunk selection over the FIFO band of each step. The stored side is stop-gradient,
        # so the key projection is moved onto the query: (Wq n).(Wk s) = (Wk^T Wq n).s, and the
        # gathers below need no backward pass.
        q_chunk = self.chunk_query(n) @ self.chunk_key.weight  # [T, B, d]
        logits = band_logits(q_chunk, bank_keys, plan.band[..., 0], M, plan.reach, plan.block) / math.sqrt(d)
        pick, weight = top_k_chunk_weights(logits, plan.visible, self.top_k)  # [T, B, k]
        if self.record_weights:
            self.last_chunk_weights = dense_chunk_weights(pick, weight, logits.shape[-1]).detach()

        # Attention inside each picked chunk over sg(contents + position), again with the
        # projections on the query side: q.(Wk c + bk) ranks like (Wk^T q).c (the bias term is
        # constant over the chunk), and sum_c p_c (Wv c + bv) = Wv (sum_c p_c c) + bv.
        q = self.query(n).view(T, B, H, E) / math.sqrt(E)
        w_key, w_value = self.key_value.weight.view(2, H, E, d).unbind(0)
        picked = gather_rows(bank + self.position, plan.band.gather(2, pick))  # [T, B, k, C, d]
        att = torch.softmax(torch.einsum("tbhd,tbkcd->tbkhc", torch.einsum("tbhe,hed->tbhd", q, w_key), picked), -1)
        mixed = torch.einsum("tbkhc,tbkcd->tbhd", att * weight[..., None, None], picked)
        value_bias = self.key_value.bias.view(2, H, E)[1]
        read = torch.einsum("tbhd,hed->tbhe", mixed, w_value) + weight.sum(-1)[..., None, None] * value_bias
        read = read.reshape(T, B, d)

        # Local attention over the chunk being filled (its own steps up to the query).
        kv_local = self.key_value(stream + self.position[plan.key_phase]).view(C + T, B, 2, H, E)
        kv_local = kv_local.unfold(0, C, 1)[1:]  # [T, B, 2, H, E, C]: times t-C+1..t
        k_loc, v_loc = kv_local.unbind(2)
        logits_loc = torch.einsum("tbhe,tbhec->tbhc", q, k_loc)
        # -inf is safe: a query always sees itself.
        att_loc = torch.softmax(logits_loc.masked_fill(~plan.local_visible[:, :, None], float("-inf")), dim=-1)
        local = torch.einsum("tbhc,tbhec->tbhe", att_loc, v_loc).reshape(T, B, d)

        h = h + self.out(torch.cat([local, read], dim=-1))
        h = h + self.ff(self.norm_ff(h))

        next_contents = bank.gather(1, plan.next_band[..., None, None].expand(-1, -1, C, d))
        next_summaries = bank_keys.gather(1, plan.next_band[..., None].expand(-1, -1, d))
        next_partial = stream[plan.next_partial_index, rows] * plan.next_partial_ok[..., None]
        return h, (next_contents, next_summaries, next_partial)


class HCAMMemory(Memory):
    """Stacked HCAM layers; state ``(contents, summaries, valid, partial, fill)`` with env dim 0."""

    recurrent = True
    state_batch_dim = 0

    def __init__(self, input_dim: int, cfg: HCAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.d_model, self.chunk, self.capacity = d, cfg.chunk_size, cfg.capacity
        self.output_dim = d
        self.embed = nn.Linear(input_dim, d)
        self.layers = nn.ModuleList(HCAMLayer(d, cfg.heads, cfg.chunk_size, cfg.top_k) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Empty memory: no valid chunk, an empty partial chunk."""
        B, L, M, C, d = batch_size, len(self.layers), self.capacity, self.chunk, self.d_model
        return (
            torch.zeros(B, L, M, C, d, device=device),
            torch.zeros(B, L, M, d, device=device),
            torch.zeros(B, M, dtype=torch.bool, device=device),
            torch.zeros(B, L, C, d, device=device),
            torch.zeros(B, dtype=torch.long, device=device),
        )

    def record_chunk_weights(self, on: bool = True) -> None:
        """Debug hook: keep each layer's dense chunk weights ``[T, B, M]`` of the last call."""
        for layer in self.layers:
            layer.record_weights = on
            layer.last_chunk_weights = None

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Read and write the chunk memory over ``x``; return outputs and the new memory."""
        contents, summaries, valid, partial, fill = state
        is_first = is_first.to(device=x.device, dtype=torch.bool)
        plan = ChunkPlan(is_first, fill, valid, self.chunk)
        h = self.embed(x)
        new = []
        for i, layer in enumerate(self.layers):
            h, mem = layer(h, (contents[:, i], summaries[:, i], partial[:, i]), plan)
            new.append(mem)
        next_contents, next_summaries, next_partial = (torch.stack(parts, dim=1) for parts in zip(*new))
        return self.norm_out(h), (next_contents, next_summaries, plan.next_valid, next_partial, plan.next_fill)


@MEMORY.register("hcam", config=HCAMConfig, summary="Hierarchical Chunk Attention Memory: top-k chunk recall.")
def make_hcam(input_dim: int, cfg: HCAMConfig) -> HCAMMemory:
    """Build the ``hcam`` core."""
    return HCAMMemory(input_dim, cfg)
