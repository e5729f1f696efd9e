"""``plr``: Prioritized Level Replay (Jiang, Grefenstette & Rocktäschel 2021; facebookresearch/level-replay).

Reading of the paper (Algorithm 1) and the reference ``LevelSampler``, as implemented here:

* Levels: a finite set of ``num_levels`` parameter vectors drawn uniformly from the box
  with the teacher's own generator when it is built (they are part of its state).
* Scores: each finished episode reports its level's score in ``extras["score"]`` — the
  mean ``|GAE advantage|`` over the episode (the reference's ``value_l1`` strategy,
  the paper's default). A level's score becomes the newest one, or an exponential
  average ``(1 - score_alpha) * old + score_alpha * new`` with ``score_alpha < 1`` (its
  first score is taken as is). A level is *seen* once it has a score. There is no
  fallback score: an update without ``extras["score"]`` raises a ValueError, since
  returns alone say nothing about the value error PLR prioritises.
* Replay distribution over seen levels: ``P = (1 - rho) P_S + rho P_C`` with rank
  prioritisation ``P_S(i) ∝ (1 / rank(S_i)) ** (1 / beta)`` (rank 1 = highest score,
  ties broken by level id; ``beta = temperature = 0.1``) and staleness
  ``P_C(i) = (c - C_i) / sum_j (c - C_j)``, ``c`` the number of levels sampled so far
  and ``C_i`` the value of ``c`` when level ``i`` was last sampled (``rho =
  staleness_coef = 0.1``). Should every seen level have zero staleness, ``P = P_S``
  (the reference would hand numpy a distribution summing to ``1 - rho``).
* Replay decision, for every sampled level: replay with probability ``|seen| / |levels|``
  (the paper's ``P_D``; the reference's "proportionate" schedule), otherwise draw a
  level uniformly from the unseen ones. ``min_seen_fraction`` is the reference's
  ``rho`` (no replay before this fraction of levels is seen; 0 follows the paper, the
  reference's command line uses 1).
* Staleness counts at sampling time, as in the reference (the paper stamps a level when
  its episode is collected); a batch of ``n`` samples is drawn one by one, so a level
  just drawn is less likely to be drawn again in the same batch.

Episodes map back to levels through ``extras["level"]`` (ids as returned by
``sample_with_ids`` or ``last_level_ids``) or, without it, by matching the params
rows exactly against the level table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lifelong.config import setting
from lifelong.curricula.base import Teacher, array, check_count, extra_array, tensor
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS


@dataclass
class PLRConfig:
    """Settings of ``curriculum.name: plr``."""

    name: str = setting("plr", "Teacher.", registry="teachers")
    num_levels: int = setting(200, "Number of levels: parameter vectors drawn uniformly from the box at start.", low=1)
    temperature: float = setting(0.1, "beta of the rank prioritisation (1/rank)^(1/beta).", low=0.0, low_open=True)
    staleness_coef: float = setting(0.1, "rho: weight of the staleness distribution in the replay mix.",
                                    low=0.0, high=1.0)
    score_alpha: float = setting(1.0, "A level's score moves this far toward each new score (1: keep the newest).",
                                 low=0.0, high=1.0, low_open=True)
    min_seen_fraction: float = setting(
        0.0, "No replay until this fraction of levels has been seen (0: the paper; the reference's CLI uses 1).",
        low=0.0, high=1.0)


class PLRTeacher(Teacher):
    """Prioritized Level Replay over a fixed set of levels, scored by the mean |GAE advantage| of their episodes."""

    kind = "plr"

    def __init__(self, cfg: PLRConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> None:
        super().__init__(space, seed, device)
        self.cfg = cfg
        levels = self.from_unit(self.rng.random((cfg.num_levels, space.dim))).cpu()
        self._set_levels(levels)
        self.scores = np.zeros(cfg.num_levels)
        self.seen = np.zeros(cfg.num_levels, dtype=bool)
        self.last_sampled = np.zeros(cfg.num_levels, dtype=np.int64)  # C_i
        self.last_returns = np.zeros(cfg.num_levels)
        self.last_level_ids = torch.zeros(0, dtype=torch.long, device=self.device)

    def _set_levels(self, levels: torch.Tensor) -> None:
        self.levels = levels.to(torch.float32).cpu()
        rows = self.levels.numpy() + np.float32(0.0)  # + 0.0 turns -0.0 into 0.0 so equal rows have equal bytes
        self._level_of_row = {row.tobytes(): i for i, row in enumerate(rows)}

    @property
    def num_levels(self) -> int:
        """Number of levels."""
        return int(self.levels.shape[0])

    # ------------------------------------------------------------------ distributions

    def replay_decision_probability(self) -> float:
        """Probability that the next sample replays a seen level: |seen| / |levels|, 0 below ``min_seen_fraction``."""
        seen_fraction = float(self.seen.mean())
        if not self.seen.any() or seen_fraction < self.cfg.min_seen_fraction:
            return 0.0
        return seen_fraction

    def _replay_weights(self) -> np.ndarray:
        cfg, seen = self.cfg, self.seen
        weights = np.zeros(self.num_levels)
        ids = np.flatnonzero(seen)
        if not len(ids):
            return weights
        order = np.lexsort((ids, -self.scores[ids]))  # highest score first, ties by level id
        ranks = np.empty(len(ids))
        ranks[order] = np.arange(1, len(ids) + 1)
        score_weights = (1.0 / ranks) ** (1.0 / cfg.temperature)
        score_weights /= score_weights.sum()
        staleness = (self.samples_drawn - self.last_sampled[ids]).astype(np.float64)
        if cfg.staleness_coef > 0 and staleness.sum() > 0:
            weights[ids] = (1.0 - cfg.staleness_coef) * score_weights + cfg.staleness_coef * staleness / staleness.sum()
        else:
            weights[ids] = score_weights
        return weights

    def replay_probabilities(self) -> torch.Tensor:
        """The replay distribution ``P [L]`` over levels (0 for unseen levels; sums to 1 once one is seen)."""
        return torch.as_tensor(self._replay_weights(), dtype=torch.float64)

    def next_level_probabilities(self) -> torch.Tensor:
        """Probability of each level being the next sample: replay and new-level branches together ``[L]``."""
        p_replay = self.replay_decision_probability()
        unseen = ~self.seen
        probs = p_replay * self._replay_weights()
        if unseen.any():
            probs[unseen] += (1.0 - p_replay) / unseen.sum()
        return torch.as_tensor(probs, dtype=torch.float64)

    # ------------------------------------------------------------------ sampling and learning

    def _sample_level(self) -> int:
        rng, seen = self.rng, self.seen
        if seen.all() or (rng.random() < self.replay_decision_probability()):
            weights = self._replay_weights()
            level = int(np.minimum(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"),
                                   self.num_levels - 1))
        else:
            unseen = np.flatnonzero(~seen)
            level = int(unseen[rng.integers(len(unseen))])
        self.samples_drawn += 1
        self.last_sampled[level] = self.samples_drawn
        return level

    def sample_with_ids(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Params ``[n, P]`` of the next ``n`` levels and their level ids ``[n]``."""
        n = check_count(n)
        ids = torch.tensor([self._sample_level() for _ in range(n)], dtype=torch.long)
        self.last_level_ids = ids.to(self.device)
        return self.levels[ids].to(self.device), self.last_level_ids

    def sample(self, n: int) -> torch.Tensor:
        """Params ``[n, P]`` of the next ``n`` levels (their ids are in ``last_level_ids``)."""
        return self.sample_with_ids(n)[0]

    def _draw_unit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        probs = self.next_level_probabilities().numpy()
        return self.to_unit(self.levels.numpy().astype(np.float64))[rng.choice(self.num_levels, size=n, p=probs)]

    def level_ids(self, params: np.ndarray) -> np.ndarray:
        """The level id of every params row ``[n, P]`` (exact match); ValueError for a row that is not a level."""
        rows = np.asarray(params, np.float64).astype(np.float32) + np.float32(0.0)
        ids = np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            level = self._level_of_row.get(row.tobytes())
            if level is None:
                raise ValueError(f"plr update: params row {i} {row.tolist()} is not one of the teacher's levels "
                                 "(pass extras['level'] with the ids from sample_with_ids)")
            ids[i] = level
        return ids

    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        n = len(returns)
        scores = extra_array(extras, "score", n)
        if scores is None:
            raise ValueError("plr update: extras['score'] is required (the mean |GAE advantage| of each episode)")
        if not np.isfinite(scores).all():
            raise ValueError(f"plr update: extras['score'] must be finite, got {scores.tolist()}")
        ids = extra_array(extras, "level", n, np.int64)
        if ids is None:
            ids = self.level_ids(params)
        elif ids.min() < 0 or ids.max() >= self.num_levels:
            raise ValueError(f"plr update: extras['level'] ids must lie in [0, {self.num_levels}), got {ids.tolist()}")
        alpha = self.cfg.score_alpha
        for level, score, ret in zip(ids, scores, returns):
            if self.seen[level]:
                self.scores[level] = (1.0 - alpha) * self.scores[level] + alpha * score
            else:
                self.scores[level] = score
                self.seen[level] = True
            self.last_returns[level] = ret

    def density(self, resolution: int = 32) -> torch.Tensor:
        """Exact cell masses of the next sample: each level's probability binned at its params."""
        unit = self.to_unit(self.levels.numpy().astype(np.float64))
        return self._histogram(unit, self.next_level_probabilities().numpy(), resolution)

    # ------------------------------------------------------------------ logging and state

    def metrics(self) -> dict[str, float]:
        """Adds the seen fraction, the replay-decision probability, mean score and the largest replay probability."""
        out = super().metrics()
        out["curriculum/seen_fraction"] = float(self.seen.mean())
        out["curriculum/replay_probability"] = self.replay_decision_probability()
        out["curriculum/mean_score"] = float(self.scores[self.seen].mean()) if self.seen.any() else 0.0
        out["curriculum/max_level_probability"] = float(self._replay_weights().max())
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"levels": self.levels.clone(), "scores": tensor(self.scores), "seen": tensor(self.seen),
                "last_sampled": tensor(self.last_sampled), "last_returns": tensor(self.last_returns),
                "last_level_ids": self.last_level_ids.cpu().clone()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        levels = state["levels"]
        if tuple(levels.shape) != (self.cfg.num_levels, self.dim):
            raise ValueError(f"teacher state: plr levels have shape {list(levels.shape)}, "
                             f"expected [{self.cfg.num_levels}, {self.dim}] (num_levels differs?)")
        self._set_levels(levels)
        self.scores = array(state["scores"])
        self.seen = array(state["seen"], bool)
        self.last_sampled = array(state["last_sampled"], np.int64)
        self.last_returns = array(state["last_returns"])
        self.last_level_ids = state["last_level_ids"].to(self.device)


@TEACHERS.register("plr", config=PLRConfig,
                   summary="Prioritized Level Replay (Jiang et al. 2021): rank + staleness replay of scored levels.")
def make_plr(cfg: PLRConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> PLRTeacher:
    """Build the PLR teacher."""
    return PLRTeacher(cfg, space, seed, device)
