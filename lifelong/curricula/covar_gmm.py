"""``covar_gmm``: Covar-GMM (Moulin-Frier et al. 2014, as implemented in flowersteam/teachDeepRL / TeachMyAgent).

Reading of the reference, as implemented here:

* Every episode becomes a row ``(unit params, time, reward)``: the reward is the
  return normalised to ``[0, 1]`` from ``reward_range``, and the time is the episode's
  position inside the current fitting period, ``(episodes_before % fit_every) /
  fit_every`` in ``[0, 1)``.
* Uniform sampling for the first ``bootstrap`` episodes (by default ``fit_every`` = 250);
  then every ``fit_every`` episodes GMMs with 2..10 full-covariance Gaussians are
  fitted to the rows of the last ``fit_every`` episodes and the lowest AIC is kept.
* A Gaussian's learning progress is the time-reward covariance of that Gaussian,
  ``max(0, cov(time, reward))`` (``absolute_lp``: ``|cov(time, reward)|``, the
  reference's option).
* Sampling: uniform with probability 0.2; otherwise a Gaussian is chosen in
  proportion to its learning progress (uniformly when all are zero) and its parameter
  marginal is sampled, clipped into the box.

As for ALP-GMM, the fit runs in unit-cube coordinates with this package's EM.
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
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS


@dataclass
class CovarGMMConfig(MixtureTeacherConfig):
    """Settings of ``curriculum.name: covar_gmm``."""

    name: str = setting("covar_gmm", "Teacher.", registry="teachers")
    absolute_lp: bool = setting(
        False, "Score Gaussians by |cov(time, reward)| instead of the original max(0, cov(time, reward)).")

    def validate(self, prefix: str) -> None:
        """Reward range ordered; component counts ordered and at most ``fit_every`` (the fitted rows)."""
        self._check_shared(prefix, self.fit_every, "fit_every")


class CovarGMMTeacher(MixtureTeacher):
    """Covar-GMM: samples where a GMM over (params, time, reward) finds reward rising with time."""

    kind = "covar_gmm"

    def __init__(self, cfg: CovarGMMConfig, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, space, seed, device)
        self._rows = np.zeros((cfg.fit_every, space.dim + 2))  # ring buffer of the last fit_every rows
        self._count = 0

    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        rewards = normalise_returns(returns, self.cfg.reward_range)
        period = self.cfg.fit_every
        for task, reward in zip(unit, rewards):
            slot = self._count % period
            self._rows[slot, : self.dim] = task
            self._rows[slot, self.dim] = slot / period
            self._rows[slot, self.dim + 1] = reward
            self._count += 1
            self._maybe_fit(self._count)

    def _fit_rows(self) -> np.ndarray:
        # Fits happen when a period is complete, so the ring holds the period's rows in time order.
        return self._rows[: min(self._count, self.cfg.fit_every)].copy()

    def _score_components(self, mixture: GaussianMixture) -> np.ndarray:
        covariance = mixture.covariances[:, self.dim, self.dim + 1]
        return np.abs(covariance) if self.cfg.absolute_lp else np.maximum(covariance, 0.0)

    def metrics(self) -> dict[str, float]:
        """Adds the largest and the mean per-Gaussian learning progress."""
        out = super().metrics()
        scores = self.component_scores
        out["curriculum/max_component_lp"] = 0.0 if scores is None else float(scores.max())
        out["curriculum/mean_component_lp"] = 0.0 if scores is None else float(scores.mean())
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"rows": tensor(self._rows), "count": self._count, "mixture": self._mixture_state()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        rows = array(state["rows"])
        if rows.shape != self._rows.shape:
            raise ValueError(f"teacher state: covar_gmm rows have shape {list(rows.shape)}, "
                             f"expected {list(self._rows.shape)} (fit_every differs?)")
        self._rows = rows
        self._count = int(state["count"])
        self._load_mixture_state(state["mixture"])


@TEACHERS.register("covar_gmm", config=CovarGMMConfig,
                   summary="Covar-GMM (Moulin-Frier et al. 2014): GMM over (params, time, reward), cov(time, reward).")
def make_covar_gmm(cfg: CovarGMMConfig, space: ParamSpace, seed: int,
                   device: torch.device | str = "cpu") -> CovarGMMTeacher:
    """Build the Covar-GMM teacher."""
    return CovarGMMTeacher(cfg, space, seed, device)
