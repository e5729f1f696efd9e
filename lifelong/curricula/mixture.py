"""What ALP-GMM and Covar-GMM share: periodic GMM fits over recent episodes and sampling from them.

Both teachers (flowersteam/teachDeepRL, TeachMyAgent) sample uniformly during a
bootstrap; afterwards, every ``fit_every`` episodes, they fit full-covariance GMMs
with ``min_components..max_components`` Gaussians to rows built from recent episodes
(parameters plus one or two extra coordinates), keep the one with the lowest
information criterion, and then sample: with probability ``random_fraction``
uniformly, otherwise from one Gaussian chosen in proportion to a per-component score
(uniformly when every score is zero), keeping the parameter coordinates of the draw
(the marginal) and clipping them into the box. The subclasses say how rows are built
and how components are scored.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from lifelong.config import setting
from lifelong.curricula.base import Teacher, check_component_range, check_reward_range, proportional_choice
from lifelong.curricula.gmm import GaussianMixture, select_mixture
from lifelong.envs.params import ParamSpace


@dataclass
class MixtureTeacherConfig:
    """Settings shared by the GMM teachers."""

    reward_range: list[float] = setting(
        [0.0, 1.0], "Episode returns are mapped linearly from [low, high] to [0, 1] (and clipped) before use.")
    bootstrap: int = setting(250, "Episodes of uniform sampling before the first GMM fit.", low=0)
    fit_every: int = setting(250, "Refit the GMMs every this many episodes once the bootstrap is over.", low=1)
    min_components: int = setting(2, "Fewest Gaussians tried at each fit.", low=1)
    max_components: int = setting(10, "Most Gaussians tried at each fit.", low=1)
    criterion: Literal["aic", "bic"] = setting(
        "aic", "Keep the fitted GMM with the lowest Akaike (aic) or Bayesian (bic) information criterion.")
    random_fraction: float = setting(0.2, "Probability of a uniform sample once a GMM is fitted.", low=0.0, high=1.0)
    em_max_iterations: int = setting(100, "EM iterations per fit at most (scikit-learn's max_iter).", low=1)
    em_tolerance: float = setting(
        1e-3, "EM stops when the mean log-likelihood per row changes by less than this.", low=0.0, low_open=True)
    em_restarts: int = setting(1, "EM runs from fresh k-means initialisations; the most likely is kept.", low=1)
    reg_covar: float = setting(1e-6, "Added to every covariance diagonal so no Gaussian collapses.", low=0.0)

    def _check_shared(self, prefix: str, window: int, window_key: str) -> None:
        check_reward_range(prefix, self.reward_range)
        check_component_range(prefix, self.min_components, self.max_components, window, window_key)


class MixtureTeacher(Teacher):
    """Uniform bootstrap, then sampling from a periodically refitted GMM with per-component scores."""

    def __init__(self, cfg: MixtureTeacherConfig, space: ParamSpace, seed: int,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(space, seed, device)
        self.cfg = cfg
        self.mixture: GaussianMixture | None = None
        self._marginal_chol: np.ndarray | None = None
        self.component_scores: np.ndarray | None = None
        self.last_fit_seconds = 0.0

    @abstractmethod
    def _fit_rows(self) -> np.ndarray:
        """The rows ``[N, P + extra]`` the next GMM is fitted to (parameters in the unit cube first)."""

    @abstractmethod
    def _score_components(self, mixture: GaussianMixture) -> np.ndarray:
        """Non-negative sampling weight of every Gaussian ``[K]``."""

    def _draw_unit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        uniform = rng.random((n, self.dim))
        if self.mixture is None:
            return uniform
        use_uniform = rng.random(n) < self.cfg.random_fraction
        components = proportional_choice(self.component_scores, rng, n)
        normals = rng.standard_normal((n, self.dim))
        gaussian = self.mixture.means[components, : self.dim] + np.einsum(
            "nij,nj->ni", self._marginal_chol[components], normals)
        return np.where(use_uniform[:, None], uniform, np.clip(gaussian, 0.0, 1.0))

    def _maybe_fit(self, episodes: int) -> None:
        """Refit when ``episodes`` (reported so far) ends a ``fit_every`` period after the bootstrap."""
        cfg = self.cfg
        if episodes < cfg.bootstrap or episodes % cfg.fit_every != 0:
            return
        rows = self._fit_rows()
        counts = [k for k in range(cfg.min_components, cfg.max_components + 1) if k <= len(rows)]
        if not counts:
            return
        started = time.perf_counter()
        mixture, _ = select_mixture(rows, counts, self.rng, cfg.criterion, max_iter=cfg.em_max_iterations,
                                    tol=cfg.em_tolerance, reg_covar=cfg.reg_covar, n_init=cfg.em_restarts)
        self.last_fit_seconds = time.perf_counter() - started
        self._set_mixture(mixture)

    def _set_mixture(self, mixture: GaussianMixture | None) -> None:
        self.mixture = mixture
        if mixture is None:
            self._marginal_chol = self.component_scores = None
            return
        self._marginal_chol = mixture.marginal_cholesky(self.dim)
        self.component_scores = self._score_components(mixture)

    def metrics(self) -> dict[str, float]:
        """Episodes, number of Gaussians (0 before the first fit), last fit time."""
        out = super().metrics()
        out["curriculum/num_components"] = float(0 if self.mixture is None else self.mixture.num_components)
        out["curriculum/fit_ms"] = 1000.0 * self.last_fit_seconds
        return out

    def _mixture_state(self) -> dict[str, Any] | None:
        return None if self.mixture is None else self.mixture.state_dict()

    def _load_mixture_state(self, state: dict[str, Any] | None) -> None:
        self._set_mixture(None if state is None else GaussianMixture.from_state_dict(state))
