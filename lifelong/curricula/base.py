"""The ``Teacher`` interface every curriculum teacher implements, and the helpers they share.

A teacher proposes the parameters of the next episodes (``sample(n) -> [n, P]``) and
learns from how they went (``update(params, returns, extras)``, episodes in completion
order). Internally every teacher works in the unit cube: parameter ``i`` is mapped
from ``[low_i, high_i]`` to ``[0, 1]`` (a zero-width parameter maps to 0), so distances,
Gaussian fits and region widths do not depend on the units of the parameters; samples
are mapped back, clipped into the bounds and returned as float32 (rounding to float32
is monotonic, so a float64 value inside the bounds stays inside the float32 bounds).

Each teacher owns a ``numpy.random.Generator(PCG64(seed))``; nothing touches numpy's or
torch's global random state. ``state_dict()`` holds tensors and plain containers only
(loadable with ``torch.load(weights_only=True)``) and is the full state, generator
included: a teacher restored from it proposes exactly the samples the original would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from lifelong.config import ConfigError
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS

# Seed of the separate generator behind Monte Carlo density images: the same teacher
# state always gives the same image, and the teacher's own stream is never touched.
DENSITY_SEED = 20240601
DENSITY_SAMPLES = 20_000


class Teacher(ABC):
    """Proposes per-episode parameters inside a ``ParamSpace`` and learns from episode outcomes."""

    kind: str = "teacher"

    def __init__(self, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> None:
        self.space = space
        self.device = torch.device(device)
        self.seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.episodes = 0  # episodes reported through update()
        self.samples_drawn = 0  # rows handed out by sample()
        self._low = np.asarray(space.low, np.float64)
        self._high = np.asarray(space.high, np.float64)
        self._width = self._high - self._low

    @property
    def dim(self) -> int:
        """Number of parameters ``P``."""
        return self.space.dim

    # ------------------------------------------------------------------ unit cube

    def to_unit(self, params: np.ndarray) -> np.ndarray:
        """Parameters ``[n, P]`` mapped to the unit cube (zero-width parameters to 0)."""
        safe = np.where(self._width > 0, self._width, 1.0)
        return np.where(self._width > 0, (params - self._low) / safe, 0.0)

    def from_unit(self, unit: np.ndarray) -> torch.Tensor:
        """Unit-cube rows ``[n, P]`` as float32 parameters inside the bounds, on the teacher's device."""
        params = np.clip(self._low + np.clip(unit, 0.0, 1.0) * self._width, self._low, self._high)
        return torch.as_tensor(params, dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------ the contract

    def sample(self, n: int) -> torch.Tensor:
        """Parameters of the next ``n`` episodes: float32 ``[n, P]``, always inside the bounds."""
        n = check_count(n)
        unit = self._draw_unit(n, self.rng)
        self.samples_drawn += n
        return self.from_unit(unit)

    @abstractmethod
    def _draw_unit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` unit-cube rows drawn with ``rng`` from the current sampling distribution; changes no state."""

    def update(self, params: torch.Tensor, returns: torch.Tensor, extras: dict[str, Any] | None = None) -> None:
        """Report finished episodes in completion order: ``params [n, P]``, ``returns [n]``, per-episode extras."""
        params_np, returns_np = self._check_update(params, returns)
        self._update(self.to_unit(params_np), returns_np, params_np, extras or {})
        self.episodes += len(returns_np)

    @abstractmethod
    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        """Learn from episodes given as unit-cube rows, raw returns and the raw parameter rows."""

    def metrics(self) -> dict[str, float]:
        """Scalars for logging under ``curriculum/<name>``."""
        return {"curriculum/episodes": float(self.episodes)}

    def density(self, resolution: int = 32) -> torch.Tensor:
        """Probability that the next sample lands in each cell of a regular grid over the first one or two parameters.

        Returns float32 ``[R]`` for one parameter, else ``[R, R]`` indexed by the cell of
        ``params[0]`` then of ``params[1]`` (other parameters marginalised); the cells sum
        to one. The default estimates it from ``DENSITY_SAMPLES`` draws of a separate,
        fixed-seed generator, so the teacher's own random stream is untouched.
        """
        draws = self._draw_unit(DENSITY_SAMPLES, np.random.Generator(np.random.PCG64(DENSITY_SEED)))
        return self._histogram(draws, np.full(len(draws), 1.0 / len(draws)), resolution)

    def _histogram(self, unit: np.ndarray, weights: np.ndarray, resolution: int) -> torch.Tensor:
        """Weighted cell masses of unit-cube rows over the first one or two parameters."""
        resolution = check_count(resolution, "resolution")
        dims = min(self.dim, 2)
        cells = np.minimum((np.clip(unit[:, :dims], 0.0, 1.0) * resolution).astype(np.int64), resolution - 1)
        flat = cells[:, 0] * (resolution if dims == 2 else 1) + (cells[:, 1] if dims == 2 else 0)
        mass = np.bincount(flat, weights=weights, minlength=resolution**dims)
        return torch.as_tensor(mass.reshape((resolution,) * dims), dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The full state: tensors and plain containers only (``torch.load(weights_only=True)`` reads it)."""
        return {"kind": self.kind, "space": self.space.to_dict(), "rng": self.rng.bit_generator.state,
                "episodes": self.episodes, "samples_drawn": self.samples_drawn, **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next samples are then exactly those the saved teacher would draw."""
        if state.get("kind") != self.kind:
            raise ValueError(f"teacher state: kind {state.get('kind')!r} cannot be loaded into a {self.kind!r} teacher")
        if ParamSpace.from_dict(state["space"]) != self.space:
            raise ValueError(f"teacher state: param space {state['space']} differs from the teacher's "
                             f"{self.space.to_dict()}")
        self.rng.bit_generator.state = state["rng"]
        self.episodes = int(state["episodes"])
        self.samples_drawn = int(state["samples_drawn"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        """Teacher-specific entries of ``state_dict``."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the entries written by ``_extra_state``."""

    # ------------------------------------------------------------------ input checks

    def _check_update(self, params: Any, returns: Any) -> tuple[np.ndarray, np.ndarray]:
        params_np = _as_numpy(params)
        if params_np.ndim == 1 and params_np.shape[0] == self.dim:
            params_np = params_np[None]
        returns_np = np.atleast_1d(_as_numpy(returns))
        if params_np.ndim != 2 or params_np.shape[1] != self.dim:
            raise ValueError(f"teacher update: params must have shape [n, {self.dim}], got {list(params_np.shape)}")
        if returns_np.ndim != 1 or returns_np.shape[0] != params_np.shape[0]:
            raise ValueError(f"teacher update: returns must have shape [{params_np.shape[0]}], "
                             f"got {list(returns_np.shape)}")
        if not np.isfinite(returns_np).all():
            raise ValueError(f"teacher update: returns must be finite, got {returns_np.tolist()}")
        return params_np, returns_np


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def check_count(n: Any, what: str = "n") -> int:
    """``n`` as an int >= 1; ValueError (one line) otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what}: {n!r} is not allowed (allowed: an int >= 1)")
    return int(n)


def extra_array(extras: dict[str, Any], key: str, n: int, dtype: Any = np.float64) -> np.ndarray | None:
    """``extras[key]`` as a numpy array ``[n]`` (None when absent); ValueError for a wrong length."""
    if key not in extras or extras[key] is None:
        return None
    value = extras[key]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(value)).astype(dtype)
    if arr.shape != (n,):
        raise ValueError(f"teacher update: extras[{key!r}] must have shape [{n}], got {list(arr.shape)}")
    return arr


def normalise_returns(returns: np.ndarray, reward_range: list[float] | tuple[float, float]) -> np.ndarray:
    """Returns mapped linearly from ``reward_range`` to ``[0, 1]`` and clipped (as the references' ``np.interp``)."""
    low, high = reward_range
    return np.clip((returns - low) / (high - low), 0.0, 1.0)


def proportional_choice(weights: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` indices drawn in proportion to non-negative ``weights``; uniform when they sum to zero."""
    weights = np.asarray(weights, np.float64)
    total = weights.sum()
    if not total > 0:
        return rng.integers(len(weights), size=n)
    cdf = np.cumsum(weights / total)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(weights) - 1)


def check_reward_range(prefix: str, reward_range: list[float]) -> None:
    """``reward_range`` must be ``[low, high]`` with ``low < high``."""
    if len(reward_range) != 2 or not reward_range[0] < reward_range[1]:
        raise ConfigError(f"{prefix}reward_range: {reward_range!r} is not allowed "
                          "(allowed: [low, high] with low < high)")


def check_component_range(prefix: str, low: int, high: int, window: int, window_key: str) -> None:
    """``min_components <= max_components <= window`` (EM needs at least one row per component)."""
    if low > high:
        raise ConfigError(f"{prefix}min_components: {low} is above {prefix}max_components={high} "
                          f"(allowed: min_components <= max_components)")
    if high > window:
        raise ConfigError(f"{prefix}max_components: {high} is above {prefix}{window_key}={window} "
                          f"(allowed: at most one component per fitted row)")


def build_teacher(cfg: Any, space: ParamSpace, seed: int, device: torch.device | str = "cpu") -> Teacher:
    """The teacher named by ``cfg.name`` (a registered teacher config) over ``space``."""
    return TEACHERS.get(cfg.name, "curriculum.name").factory(cfg, space, seed, device=device)


def tensor(x: np.ndarray) -> torch.Tensor:
    """A numpy array as a CPU tensor that owns its memory (for ``state_dict``)."""
    return torch.from_numpy(np.array(x, copy=True))


def array(t: Any, dtype: Any = np.float64) -> np.ndarray:
    """A ``state_dict`` tensor back as a numpy array of ``dtype``."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.array(t, dtype=dtype, copy=True)
