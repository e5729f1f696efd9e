"""``alp_gmm``: Absolute Learning Progress Gaussian Mixture Model (Portelas et al. 2019, flowersteam/teachDeepRL).

Reading of the reference, as implemented here:

* Returns are normalised to ``[0, 1]`` from ``reward_range`` (the reference's
  ``np.interp(reward, (lb, ub), (0, 1))``, which clips).
* The ALP of a finished episode is ``|r - r'|`` where ``r'`` is the normalised return
  of the nearest previously reported task (Euclidean, in the unit cube of parameters);
  it is 0 while at most 5 earlier episodes exist. The episode then joins the history.
  The nearest task is exact (``NearestNeighbourIndex``: a k-d tree rebuilt now and then
  plus a brute-force scan of the newest points, like the reference's buffered
  ``cKDTree``); ``alp_max_history`` limits the search to the newest episodes (the
  reference's ``alp_max_size``, unlimited by default).
* Uniform sampling for the first ``bootstrap`` (250) episodes; then every ``fit_every``
  (250) episodes GMMs with 2..10 full-covariance Gaussians are fitted to the last
  ``fit_window`` (250) rows ``(unit params, ALP)`` and the lowest AIC (or BIC) is kept.
* Sampling: uniform with probability 0.2; otherwise a Gaussian is chosen in
  proportion to the ALP coordinate of its mean (uniformly if all are zero) and its
  parameter marginal is sampled, clipped into the box.

Differences from the reference: the GMMs are fitted in unit-cube coordinates rather
than raw units (the maximum-likelihood fit is affine-equivariant, so only the tiny
``reg_covar`` and the k-means seeding see the difference), and EM is this package's
own batched implementation of scikit-learn's procedure (``lifelong.curricula.gmm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lifelong.config import setting
from lifelong.curricula.base import array, normalise_returns, tensor
from lifelong.curricula.gmm import GaussianMixture
from lifelong.curricula.mixture import MixtureTeacher, MixtureTeacherConfig
from lifelong.curricula.nearest import NearestNeighbourIndex
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS

# The reference computes ALP only once more than this many episodes are in its history.
MIN_ALP_HISTORY = 5


@dataclass
class ALPGMMConfig(MixtureTeacherConfig):
    """Settings of ``curriculum.name: alp_gmm``."""

    name: str = setting("alp_gmm", "Teacher.", registry="teachers")
    fit_window: int = setting(250, "The GMMs are fitted to the (params, ALP) rows of the last this many episodes.",
                              low=1)
    alp_max_history: int | None = setting(
        None, "Search only the last this many episodes for a task's nearest predecessor (null: all of them).", low=1)

    def validate(self, prefix: str) -> None:
        """Reward range ordered; component counts ordered and at most ``fit_window``."""
        self._check_shared(prefix, self.fit_window, "fit_window")


class ALPGMMTeacher(MixtureTeacher):
    """ALP-GMM: samples where a GMM over (params, absolute learning progress) finds high mean ALP."""

    kind = "alp_gmm"

    def __init__(self, cfg: ALPGMMConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, space, seed, device)
        self.history = NearestNeighbourIndex(space.dim, max_size=cfg.alp_max_history)
        self._alps = np.zeros(64)

    @property
    def alps(self) -> np.ndarray:
        """ALP of every reported episode, ``[episodes]``."""
        return self._alps[: self.history.count]

    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        rewards = normalise_returns(returns, self.cfg.reward_range)
        for task, reward in zip(unit, rewards):
            alp = 0.0
            if len(self.history) > MIN_ALP_HISTORY:
                alp = abs(float(reward) - self.history.value(self.history.nearest(task)))
            count = self.history.count
            if count == len(self._alps):
                self._alps = np.concatenate([self._alps, np.zeros_like(self._alps)])
            self._alps[count] = alp
            self.history.add(task, float(reward))
            self._maybe_fit(count + 1)

    def _fit_rows(self) -> np.ndarray:
        start = max(0, self.history.count - self.cfg.fit_window)
        return np.concatenate([self.history.points[start:], self.alps[start:, None]], axis=1)

    def _score_components(self, mixture: GaussianMixture) -> np.ndarray:
        return np.maximum(mixture.means[:, -1], 0.0)

    def metrics(self) -> dict[str, float]:
        """Adds the mean ALP of the last ``fit_window`` episodes and the largest component mean ALP."""
        out = super().metrics()
        recent = self.alps[-self.cfg.fit_window:]
        out["curriculum/mean_alp"] = float(recent.mean()) if len(recent) else 0.0
        out["curriculum/max_component_alp"] = (
            0.0 if self.component_scores is None else float(self.component_scores.max()))
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"tasks": tensor(self.history.points), "rewards": tensor(self.history.values),
                "alps": tensor(self.alps), "mixture": self._mixture_state()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        tasks, rewards, alps = array(state["tasks"]), array(state["rewards"]), array(state["alps"])
        self.history.load(tasks.reshape(-1, self.dim), rewards)
        self._alps = np.zeros(max(64, len(alps)))
        self._alps[: len(alps)] = alps
        self._load_mixture_state(state["mixture"])


@TEACHERS.register("alp_gmm", config=ALPGMMConfig,
                   summary="ALP-GMM (Portelas et al. 2019): GMM over (params, absolute learning progress).")
def make_alp_gmm(cfg: ALPGMMConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> ALPGMMTeacher:
    """Build the ALP-GMM teacher."""
    return ALPGMMTeacher(cfg, space, seed, device)
