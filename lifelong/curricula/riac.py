"""``riac``: Robust Intelligent Adaptive Curiosity (Baranes & Oudeyer 2009), as in flowersteam/teachDeepRL.

Reading of the reference (teachDeepRL's RIAC, kept in TeachMyAgent), as implemented here:

* Regions form a binary tree over the parameter box; the root is the whole box. Every
  region keeps the ``(reward, task)`` pairs of the episodes that fell in it, at most
  ``max_region_size + 1`` (201), dropping the oldest. A finished episode is added to
  every region on the path from the root to the leaf containing it.
* A region's ALP is ``|mean(first half) - mean(second half)|`` of its last
  ``alp_window`` (default ``max_region_size``) rewards, halves split at ``window // 2``
  from the end; 0 with at most 2 rewards.
* A leaf holding more than ``max_region_size`` pairs is split: ``split_attempts`` (50)
  random cuts (a dimension uniformly, a threshold uniformly within the region) are
  tried; a cut is valid if both children keep at least ``min_region_points`` (10)
  pairs and at least ``min_width_fraction`` (1/15) of the box's range in every
  dimension; the valid cut with the highest score wins (ties: the later one). With no
  valid cut, the oldest ``discard_fraction`` (1/4) of the leaf's pairs are dropped.
* Sampling, per sample: with probability ``mutation_fraction`` (0.1) a region is chosen
  in proportion to its ALP, its lowest-reward task is perturbed by Gaussian noise of
  std ``mutation_std`` and clipped 1e-5 inside the region; with probability
  ``random_fraction`` (0.2) uniformly over the box; otherwise (0.7) a region is chosen
  in proportion to its ALP and sampled uniformly. Regions are all tree nodes (parents
  included) unless ``sample_leaves_only``; a zero ALP everywhere means a uniform choice.

Departures, each deliberate:

* Split score. RIAC scores a cut by ``card(R1) * card(R2) * |ALP(R1) - ALP(R2)|``. The
  reference writes ``len(sub_region)`` of a ``[rewards, tasks]`` pair, which is always
  2, so it effectively maximises ``|ALP(R1) - ALP(R2)|``. ``split_score:
  card_weighted`` (default) uses the real counts; ``alp_difference`` reproduces the
  reference's behaviour.
* The reference redraws a cut until both children hold ``min_region_points`` pairs,
  without a bound (it never ends when all pairs coincide); here each attempt redraws at
  most ``MAX_REDRAWS`` times and otherwise counts as invalid.
* New children get the ALP of their own pairs (the reference gives them the ALPs of
  the last attempted cut, not of the chosen one).
* A task exactly on a cut goes to the lower child (``x[dim] <= threshold``), the same
  rule the split uses; the reference's closed boxes put it into both children.
* The reference's mutation noise (std 0.1) is in raw parameter units; here
  ``mutation_std`` is a fraction of each parameter's range (everything runs in the unit
  cube), and the mutation falls back to a uniform sample for a region with no pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from lifelong.config import ConfigError, setting
from lifelong.curricula.base import Teacher, array, check_reward_range, normalise_returns, proportional_choice, tensor
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS

MAX_REDRAWS = 100  # cut redraws per split attempt before the attempt counts as invalid
CLIP_MARGIN = 1e-5  # mutated tasks stay this far inside their region (unit cube)


@dataclass
class RIACConfig:
    """Settings of ``curriculum.name: riac``."""

    name: str = setting("riac", "Teacher.", registry="teachers")
    reward_range: list[float] = setting(
        [0.0, 1.0], "Episode returns are mapped linearly from [low, high] to [0, 1] (and clipped) before use.")
    max_region_size: int = setting(200, "A leaf region holding more (reward, task) pairs than this is split.", low=2)
    split_attempts: int = setting(50, "Random cuts tried per split.", low=1)
    min_region_points: int = setting(10, "Each child of a split keeps at least this many pairs.", low=1)
    min_width_fraction: float = setting(
        1 / 15, "Each child of a split spans at least this fraction of the box's range in every dimension.",
        low=0.0, high=0.5)
    discard_fraction: float = setting(
        0.25, "With no valid cut, drop this fraction of the leaf's oldest pairs.", low=0.0, high=1.0)
    alp_window: int | None = setting(
        None, "A region's ALP compares the two halves of its last this many rewards (null: max_region_size).", low=2)
    split_score: Literal["card_weighted", "alp_difference"] = setting(
        "card_weighted",
        "Cut score: card(R1)*card(R2)*|ALP1-ALP2| (RIAC) or |ALP1-ALP2| (what the reference computes).")
    random_fraction: float = setting(0.2, "Probability of a uniform sample over the box.", low=0.0, high=1.0)
    mutation_fraction: float = setting(
        0.1, "Probability of perturbing the lowest-reward task of an ALP-chosen region.", low=0.0, high=1.0)
    mutation_std: float = setting(0.1, "Std of that perturbation, as a fraction of each parameter's range.", low=0.0)
    sample_leaves_only: bool = setting(False, "Choose among leaf regions only (the reference chooses among all).")

    def validate(self, prefix: str) -> None:
        """Reward range ordered; sampling fractions sum to at most 1; children can fit in a full region."""
        check_reward_range(prefix, self.reward_range)
        if self.random_fraction + self.mutation_fraction > 1.0:
            raise ConfigError(f"{prefix}mutation_fraction: {self.mutation_fraction} plus {prefix}random_fraction="
                              f"{self.random_fraction} exceeds 1 (allowed: a sum <= 1)")
        if 2 * self.min_region_points > self.max_region_size + 1:
            raise ConfigError(f"{prefix}min_region_points: {self.min_region_points} is too large for "
                              f"{prefix}max_region_size={self.max_region_size} (allowed: 2 * min_region_points "
                              "<= max_region_size + 1)")


@dataclass
class Region:
    """A box of the parameter space (unit cube), its tree links and its recent (reward, task) pairs."""

    low: np.ndarray
    high: np.ndarray
    parent: int = -1
    children: tuple[int, int] | None = None
    split_dim: int = -1
    split_value: float = 0.0
    rewards: list[float] = field(default_factory=list)
    tasks: list[np.ndarray] = field(default_factory=list)
    alp: float = 0.0


def window_alp(rewards: list[float], window: int) -> float:
    """``|mean(first half) - mean(second half)|`` of the last ``window`` rewards (0 for at most two)."""
    if len(rewards) <= 2:
        return 0.0
    size = min(len(rewards), window)
    half = size // 2
    recent = rewards[-size:]
    # Plain Python sums: a few hundred floats are summed faster than numpy can be called.
    return abs(sum(recent[: size - half]) / (size - half) - sum(recent[size - half:]) / half)


class RIACTeacher(Teacher):
    """RIAC: splits the box into regions of contrasting learning progress and samples where it is high."""

    kind = "riac"

    def __init__(self, cfg: RIACConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> None:
        super().__init__(space, seed, device)
        self.cfg = cfg
        self.capacity = cfg.max_region_size + 1
        self.window = cfg.alp_window if cfg.alp_window is not None else cfg.max_region_size
        self.regions: list[Region] = [Region(np.zeros(space.dim), np.ones(space.dim))]
        self._min_width = np.where(self._width > 0, cfg.min_width_fraction, 0.0)
        self.splits = 0
        self._index_regions()

    def _index_regions(self) -> None:
        """Rebuild the arrays sampling reads (region boxes and ALPs) from ``regions``; needed after a split."""
        self._region_low = np.stack([r.low for r in self.regions])
        self._region_high = np.stack([r.high for r in self.regions])
        self._region_alp = np.array([r.alp for r in self.regions])
        if self.cfg.sample_leaves_only:
            self._sampling_ids = np.array([i for i, r in enumerate(self.regions) if r.children is None])
        else:
            self._sampling_ids = np.arange(len(self.regions))

    # ------------------------------------------------------------------ learning

    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        rewards = normalise_returns(returns, self.cfg.reward_range)
        for task, reward in zip(unit, rewards):
            self._add(task, float(reward))

    def _add(self, task: np.ndarray, reward: float) -> None:
        path = []
        node = 0
        while True:
            path.append(node)
            region = self.regions[node]
            region.rewards.append(reward)
            region.tasks.append(task.copy())
            if len(region.rewards) > self.capacity:
                del region.rewards[0], region.tasks[0]
            if region.children is None:
                break
            node = region.children[0] if task[region.split_dim] <= region.split_value else region.children[1]
        leaf = self.regions[node]
        if len(leaf.rewards) > self.cfg.max_region_size and self._split(node):
            self._index_regions()
        for nid in path:
            region = self.regions[nid]
            region.alp = window_alp(region.rewards, self.window)
            self._region_alp[nid] = region.alp

    def _split(self, nid: int) -> bool:
        """Split leaf ``nid`` by the best of ``split_attempts`` random cuts, or drop its oldest pairs."""
        cfg, rng = self.cfg, self.rng
        region = self.regions[nid]
        tasks = np.asarray(region.tasks)
        rewards = np.asarray(region.rewards)
        best_score, best = 0.0, None
        for _ in range(cfg.split_attempts):
            for _ in range(MAX_REDRAWS):
                dim = int(rng.integers(self.dim))
                threshold = float(rng.uniform(region.low[dim], region.high[dim]))
                lower = tasks[:, dim] <= threshold
                count_lower = int(lower.sum())
                if min(count_lower, len(lower) - count_lower) >= cfg.min_region_points:
                    break
            else:
                continue
            low_high = region.high.copy()
            low_high[dim] = threshold
            high_low = region.low.copy()
            high_low[dim] = threshold
            if (low_high - region.low < self._min_width).any() or (region.high - high_low < self._min_width).any():
                continue
            alp_lower = window_alp(rewards[lower].tolist(), self.window)
            alp_upper = window_alp(rewards[~lower].tolist(), self.window)
            score = abs(alp_lower - alp_upper)
            if cfg.split_score == "card_weighted":
                score *= count_lower * (len(lower) - count_lower)
            if score >= best_score:
                best_score, best = score, (dim, threshold, lower, low_high, high_low)
        if best is None:
            drop = int(cfg.max_region_size * cfg.discard_fraction)
            del region.rewards[:drop], region.tasks[:drop]
            return False
        dim, threshold, lower, low_high, high_low = best
        children = []
        for mask, low, high in ((lower, region.low, low_high), (~lower, high_low, region.high)):
            idx = np.flatnonzero(mask)
            child = Region(low.copy(), high.copy(), parent=nid, rewards=[float(rewards[i]) for i in idx],
                           tasks=[tasks[i].copy() for i in idx])
            child.alp = window_alp(child.rewards, self.window)
            children.append(len(self.regions))
            self.regions.append(child)
        region.children = (children[0], children[1])
        region.split_dim, region.split_value = dim, threshold
        self.splits += 1
        return True

    # ------------------------------------------------------------------ sampling

    def sampling_regions(self) -> list[int]:
        """Ids of the regions sampling chooses among (all, or the leaves), in creation order."""
        return self._sampling_ids.tolist()

    def _draw_unit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        ids = self._sampling_ids
        mode = rng.random(n)
        uniform = rng.random((n, self.dim))
        chosen = ids[proportional_choice(self._region_alp[ids], rng, n)]
        low, high = self._region_low[chosen], self._region_high[chosen]
        in_region = low + rng.random((n, self.dim)) * (high - low)
        normals = rng.standard_normal((n, self.dim))
        has_pairs = np.array([len(self.regions[r].rewards) > 0 for r in chosen], dtype=bool)
        mutate = (mode < cfg.mutation_fraction) & has_pairs
        random = (mode < cfg.mutation_fraction + cfg.random_fraction) & ~mutate
        out = np.where(random[:, None], uniform, in_region)
        for row in np.flatnonzero(mutate):
            rewards = self.regions[chosen[row]].rewards
            worst = self.regions[chosen[row]].tasks[min(range(len(rewards)), key=rewards.__getitem__)]
            mutated = worst + cfg.mutation_std * normals[row]
            out[row] = np.clip(mutated, low[row] + CLIP_MARGIN, high[row] - CLIP_MARGIN)
        return np.clip(out, 0.0, 1.0)

    # ------------------------------------------------------------------ logging and state

    def metrics(self) -> dict[str, float]:
        """Adds the number of regions and the mean and largest region ALP."""
        out = super().metrics()
        alps = self._region_alp[self._sampling_ids]
        out["curriculum/num_regions"] = float(len(alps))
        out["curriculum/mean_alp"] = float(alps.mean())
        out["curriculum/max_alp"] = float(alps.max())
        return out

    def _extra_state(self) -> dict[str, Any]:
        regions = self.regions
        counts = [len(r.rewards) for r in regions]
        tasks = [np.asarray(r.tasks).reshape(-1, self.dim) for r in regions]
        return {
            "splits": self.splits,
            "low": tensor(np.stack([r.low for r in regions])),
            "high": tensor(np.stack([r.high for r in regions])),
            "parent": tensor(np.array([r.parent for r in regions], np.int64)),
            "children": tensor(np.array([r.children or (-1, -1) for r in regions], np.int64)),
            "split_dim": tensor(np.array([r.split_dim for r in regions], np.int64)),
            "split_value": tensor(np.array([r.split_value for r in regions], np.float64)),
            "alp": tensor(np.array([r.alp for r in regions], np.float64)),
            "counts": tensor(np.array(counts, np.int64)),
            "rewards": tensor(np.concatenate([np.asarray(r.rewards, np.float64) for r in regions])),
            "tasks": tensor(np.concatenate(tasks)),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        low, high = array(state["low"]), array(state["high"])
        parent, children = array(state["parent"], np.int64), array(state["children"], np.int64)
        split_dim, split_value = array(state["split_dim"], np.int64), array(state["split_value"])
        alp, counts = array(state["alp"]), array(state["counts"], np.int64)
        rewards, tasks = array(state["rewards"]), array(state["tasks"]).reshape(-1, self.dim)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        self.regions = []
        for i in range(len(low)):
            a, b = offsets[i], offsets[i + 1]
            kids = None if children[i, 0] < 0 else (int(children[i, 0]), int(children[i, 1]))
            self.regions.append(Region(low[i], high[i], int(parent[i]), kids, int(split_dim[i]), float(split_value[i]),
                                       [float(r) for r in rewards[a:b]], [t.copy() for t in tasks[a:b]],
                                       float(alp[i])))
        self.splits = int(state["splits"])
        self._index_regions()


@TEACHERS.register("riac", config=RIACConfig,
                   summary="RIAC (Baranes & Oudeyer 2009): region splitting by learning progress, 70/20/10 sampling.")
def make_riac(cfg: RIACConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> RIACTeacher:
    """Build the RIAC teacher."""
    return RIACTeacher(cfg, space, seed, device)
