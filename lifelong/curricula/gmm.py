"""Gaussian mixtures with full covariances, fitted by EM (no scikit-learn needed).

``fit_mixtures`` fits one mixture per requested number of components at once: the
models are padded to the largest component count and every E and M step is one
batched float64 torch operation over ``[model, component, sample, dim]`` (torch rather
than numpy because numpy's OpenBLAS starts its own threads on these products and, on a
shared machine, runs them several times slower; torch follows ``torch.set_num_threads``).

The procedure follows scikit-learn's ``GaussianMixture(covariance_type="full")``, which
the reference teachers use: k-means initialisation (k-means++ seeding, then Lloyd
iterations), EM until the mean log-likelihood per sample changes by less than ``tol``
(each model stops on its own), ``reg_covar`` added to every covariance diagonal, the
best of ``n_init`` restarts kept. Random draws come only from the caller's numpy
generator, so a fit is a pure function of the data and the generator state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LOG_2PI = math.log(2.0 * math.pi)
_EPS = float(np.finfo(np.float64).eps)


@dataclass
class GaussianMixture:
    """A fitted mixture: ``weights [K]``, ``means [K, D]``, ``covariances [K, D, D]`` (float64 numpy)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def num_components(self) -> int:
        """Number of Gaussians ``K``."""
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        """Dimension ``D`` of the modelled data."""
        return int(self.means.shape[1])

    def num_parameters(self) -> int:
        """Free parameters: means, full covariances and the weights (which sum to one)."""
        k, d = self.num_components, self.dim
        return k * d + k * d * (d + 1) // 2 + k - 1

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """Log-density of every row of ``x [N, D]``: ``[N]``."""
        xt = torch.as_tensor(np.asarray(x, np.float64))
        cov = torch.from_numpy(self.covariances)[None]
        logp = component_log_prob(xt, torch.from_numpy(self.means)[None], safe_cholesky(cov))[0]
        logp = logp + torch.from_numpy(self.weights).log()[:, None]
        return torch.logsumexp(logp, dim=0).numpy()

    def log_likelihood(self, x: np.ndarray) -> float:
        """Total log-likelihood of the rows of ``x``."""
        return float(self.score_samples(x).sum())

    def criterion(self, x: np.ndarray, name: str) -> float:
        """``aic`` or ``bic`` of this mixture on ``x`` (lower is better)."""
        return information_criterion(self.log_likelihood(x), self.num_parameters(), len(x), name)

    def marginal_cholesky(self, dims: int) -> np.ndarray:
        """Cholesky factors ``[K, dims, dims]`` of the covariances of the first ``dims`` coordinates."""
        return safe_cholesky(torch.from_numpy(np.ascontiguousarray(self.covariances[:, :dims, :dims]))).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters as float64 tensors."""
        return {"weights": torch.from_numpy(self.weights.copy()), "means": torch.from_numpy(self.means.copy()),
                "covariances": torch.from_numpy(self.covariances.copy())}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "GaussianMixture":
        """Inverse of ``state_dict``."""
        return cls(*(state[k].detach().cpu().to(torch.float64).numpy().copy()
                     for k in ("weights", "means", "covariances")))


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore the setting.

    The EM tensors are just large enough for torch to split elementwise ops across
    threads, and on a busy machine that made a fit 5-8 times slower (24 ms on one
    thread, 135-190 ms on two, 2 shared cores). The switch itself costs under a microsecond.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def safe_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of ``cov [..., D, D]``, robust to matrices that are not positive definite.

    A failing matrix gets growing diagonal jitter (1e-9 up to 1e-1 times its mean
    variance); one that still fails (NaN entries) falls back to the square root of its
    clamped diagonal, so a degenerate Gaussian never stops a run.
    """
    chol, info = torch.linalg.cholesky_ex(cov)
    bad = info > 0
    if not bool(bad.any()):
        return chol
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).abs().mean(-1).nan_to_num(1.0).clamp_min(1e-12)
    jitter = 1e-9
    while bool(bad.any()) and jitter <= 1e-1:
        retry, retry_info = torch.linalg.cholesky_ex(cov[bad] + (jitter * scale[bad])[..., None, None] * eye)
        chol[bad] = retry
        info = info.clone()
        info[bad] = retry_info
        bad = info > 0
        jitter *= 10.0
    if bool(bad.any()):
        variances = torch.diagonal(cov[bad], dim1=-2, dim2=-1).nan_to_num(1e-6).clamp_min(1e-6)
        chol[bad] = torch.diag_embed(variances.sqrt())
    return chol


def component_log_prob(x: torch.Tensor, means: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Gaussian log-densities of ``x [N, D]`` under ``means [G, K, D]`` and Cholesky factors: ``[G, K, N]``."""
    n, d = x.shape
    g, k = means.shape[:2]
    eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(g, k, d, d)
    # y = (x - mu) L^-T for every component through one matrix product, as scikit-learn computes it.
    prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
    xp = (x @ prec_chol.permute(2, 0, 1, 3).reshape(d, g * k * d)).reshape(n, g, k, d)
    mp = (means.unsqueeze(-2) @ prec_chol).squeeze(-2)
    # A product with ones sums the short last axis far faster than torch's sum over it.
    maha = ((xp - mp).square() @ torch.ones(d, dtype=x.dtype, device=x.device)).permute(1, 2, 0)
    logdet = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (d * LOG_2PI + logdet[..., None] + maha)


def _kmeans_labels(x: torch.Tensor, counts: torch.Tensor, rng: np.random.Generator, iterations: int) -> torch.Tensor:
    """k-means++ seeding and Lloyd iterations for every model at once: labels ``[G, N]``."""
    n, d = x.shape
    g, kmax = len(counts), int(counts.max())
    ones = torch.ones(d, dtype=x.dtype, device=x.device)
    active = torch.arange(kmax, device=x.device)[None, :] < counts[:, None]
    first = torch.as_tensor(rng.integers(n, size=g), device=x.device)
    uniforms = torch.as_tensor(rng.random((kmax, g)), device=x.device)
    centers = torch.empty(g, kmax, x.shape[1], dtype=x.dtype, device=x.device)
    centers[:, 0] = x[first]
    nearest_sq = (x[None] - centers[:, :1]).square() @ ones
    for j in range(1, kmax):
        total = nearest_sq.sum(1, keepdim=True)
        weights = torch.where(total > 0, nearest_sq / total.clamp_min(1e-300), torch.full_like(nearest_sq, 1.0 / n))
        cdf = weights.cumsum(1)
        picks = (cdf < uniforms[j, :, None] * cdf[:, -1:]).sum(1).clamp_max(n - 1)
        centers[:, j] = x[picks]
        nearest_sq = torch.minimum(nearest_sq, (x[None] - centers[:, j : j + 1]).square() @ ones)
    labels = torch.full((g, n), -1, dtype=torch.long, device=x.device)
    ks = torch.arange(kmax, device=x.device)
    x_sq = x.square() @ ones
    for _ in range(iterations):
        dist = x_sq[None, :, None] - 2.0 * (x @ centers.transpose(1, 2)) + (centers.square() @ ones)[:, None, :]
        new_labels = dist.masked_fill(~active[:, None, :], math.inf).argmin(-1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = (labels[..., None] == ks).to(x.dtype)
        sizes = onehot.sum(1)
        sums = onehot.transpose(1, 2) @ x
        centers = torch.where(sizes[..., None] > 0, sums / sizes.clamp_min(1.0)[..., None], centers)
    return labels


def _m_step(x: torch.Tensor, outer: torch.Tensor, resp: torch.Tensor, active: torch.Tensor, reg_covar: float):
    """Weights, means and covariances ``[G, K(, D(, D))]`` from responsibilities ``resp [G, K, N]``.

    ``outer [N, D*D]`` holds the products ``x x^T`` of the (centred) data, so the
    covariances are one matrix product of second moments minus the outer means.
    """
    n, d = x.shape
    nk = resp.sum(-1) + 10.0 * _EPS
    means = (resp @ x) / nk[..., None]
    second = (resp @ outer).reshape(*resp.shape[:2], d, d) / nk[..., None, None]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    cov = second - means[..., :, None] * means[..., None, :] + reg_covar * eye
    weights = torch.where(active, nk / n, torch.zeros_like(nk))
    return weights, means, cov


def _e_step(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor, active: torch.Tensor):
    """Mean log-likelihood per sample ``[G]`` and log-responsibilities ``[G, K, N]``."""
    logw = weights.log().masked_fill(~active, -math.inf)
    weighted = component_log_prob(x, means, chol) + logw[..., None]
    log_norm = torch.logsumexp(weighted, dim=1)
    return log_norm.mean(-1), weighted - log_norm[:, None, :]


def fit_mixtures(
    x: np.ndarray,
    component_counts: list[int] | np.ndarray,
    rng: np.random.Generator,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    kmeans_iter: int = 100,
) -> tuple[list[GaussianMixture], list[float]]:
    """Fit one full-covariance mixture per entry of ``component_counts`` to ``x [N, D]`` by batched EM.

    Returns the mixtures and their total log-likelihoods on ``x``.
    """
    with single_torch_thread():
        return _fit_mixtures(x, component_counts, rng, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                             n_init=n_init, kmeans_iter=kmeans_iter)


def _fit_mixtures(x: np.ndarray, component_counts: list[int] | np.ndarray, rng: np.random.Generator, *,
                  max_iter: int, tol: float, reg_covar: float, n_init: int,
                  kmeans_iter: int) -> tuple[list[GaussianMixture], list[float]]:
    data = torch.as_tensor(np.asarray(x, np.float64))
    counts = torch.as_tensor(np.asarray(component_counts, np.int64))
    n = data.shape[0]
    if int(counts.min()) < 1 or int(counts.max()) > n:
        raise ValueError(f"component counts {counts.tolist()} must lie in [1, {n}] for {n} samples")
    # Centred data keep the second-moment covariances free of cancellation; the means shift back at the end.
    shift = data.mean(0)
    data = data - shift
    outer = (data[:, :, None] * data[:, None, :]).reshape(n, -1)
    g, kmax = len(counts), int(counts.max())
    ks = torch.arange(kmax)
    active = ks[None, :] < counts[:, None]
    best: tuple | None = None
    for _ in range(n_init):
        labels = _kmeans_labels(data, counts, rng, max(1, kmeans_iter))
        resp = (labels[:, None, :] == ks[None, :, None]).to(data.dtype)
        weights, means, cov = _m_step(data, outer, resp, active, reg_covar)
        chol = safe_cholesky(cov)
        lower = torch.full((g,), -math.inf, dtype=data.dtype)
        done = torch.zeros(g, dtype=torch.bool)
        for _ in range(max_iter):
            todo = (~done).nonzero().squeeze(1)
            mean_ll, log_resp = _e_step(data, weights[todo], means[todo], chol[todo], active[todo])
            w2, m2, c2 = _m_step(data, outer, log_resp.exp(), active[todo], reg_covar)
            weights[todo], means[todo], cov[todo] = w2, m2, c2
            chol[todo] = safe_cholesky(c2)
            change = mean_ll - lower[todo]
            lower[todo] = mean_ll
            done[todo[change.abs() < tol]] = True
            if bool(done.all()):
                break
        final_ll, _ = _e_step(data, weights, means, chol, active)
        if best is None:
            best = (final_ll, weights, means, cov)
        else:  # keep, model by model, the more likely of this restart and the best so far
            better = final_ll > best[0]
            best = tuple(torch.where(better.reshape(-1, *([1] * (a.dim() - 1))), a, b)
                         for a, b in zip((final_ll, weights, means, cov), best))
    final_ll, weights, means, cov = best
    mixtures = [
        GaussianMixture((weights[i, :k] / weights[i, :k].sum()).numpy().copy(),
                        (means[i, :k] + shift).numpy().copy(), cov[i, :k].numpy().copy())
        for i, k in enumerate(counts.tolist())
    ]
    return mixtures, (final_ll * n).tolist()


def information_criterion(log_likelihood: float, num_parameters: int, num_samples: int, name: str) -> float:
    """``aic = -2 log L + 2 p`` or ``bic = -2 log L + p log N`` (lower is better)."""
    if name == "aic":
        return -2.0 * log_likelihood + 2.0 * num_parameters
    if name == "bic":
        return -2.0 * log_likelihood + num_parameters * math.log(num_samples)
    raise ValueError(f"criterion: {name!r} is not allowed (allowed: aic, bic)")


def select_mixture(
    x: np.ndarray,
    component_counts: list[int] | np.ndarray,
    rng: np.random.Generator,
    criterion: str = "aic",
    **fit_kwargs: Any,
) -> tuple[GaussianMixture, list[float]]:
    """Fit a mixture per component count and keep the one with the lowest ``criterion`` (aic or bic)."""
    mixtures, log_likelihoods = fit_mixtures(x, component_counts, rng, **fit_kwargs)
    scores = [information_criterion(ll, m.num_parameters(), len(x), criterion)
              for m, ll in zip(mixtures, log_likelihoods)]
    return mixtures[int(np.argmin(scores))], scores
