"""Classic control as batched torch envs: Gymnasium's CartPole-v1 and Pendulum-v1 physics and POPGym's variants.

The physics repeat Gymnasium's code operation for operation (``dtype="float64"``
reproduces Gymnasium's float64 state to rounding; the default float32 is faster). The
POPGym variants observe part of the state, optionally with Gaussian noise clipped to
the observation bounds, and scale rewards so that episode returns lie in [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from lifelong.envs.native.base import NativeVecEnv, State

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _check_length(length: int) -> int:
    if int(length) < 1:
        raise ValueError(f"max_episode_length must be >= 1, got {length}")
    return int(length)


def _check_sigma(sigma: float) -> float:
    if not float(sigma) >= 0.0:
        raise ValueError(f"noise_sigma must be >= 0, got {sigma}")
    return float(sigma)


# ------------------------------------------------------------------------ CartPole

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


def cartpole_step(
    x: torch.Tensor, x_dot: torch.Tensor, theta: torch.Tensor, theta_dot: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """One Euler step of Gymnasium's CartPole for state components ``[B]`` and actions ``[B]`` in {0, 1}.

    Returns (x, x_dot, theta, theta_dot, terminated). The operations are in Gymnasium's
    order so that a float64 state reproduces Gymnasium's numbers.
    """
    force = action.to(x.dtype) * (2 * FORCE_MAG) - FORCE_MAG  # +-FORCE_MAG for actions 1/0, exactly
    costheta = torch.cos(theta)
    sintheta = torch.sin(theta)
    temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    x = x + TAU * x_dot
    x_dot = x_dot + TAU * xacc
    theta = theta + TAU * theta_dot
    theta_dot = theta_dot + TAU * thetaacc
    # |v| > threshold is Gymnasium's v < -threshold or v > threshold
    terminated = (x.abs() > X_THRESHOLD) | (theta.abs() > THETA_THRESHOLD)
    return x, x_dot, theta, theta_dot, terminated


_CARTPOLE_STATE = ("x", "x_dot", "theta", "theta_dot")


class CartPole(NativeVecEnv):
    """Gymnasium CartPole-v1: full state observed, reward 1 per step, truncated after 500 steps.

    The state is kept as four ``[B]`` tensors ``x, x_dot, theta, theta_dot``.
    """

    _observed = _CARTPOLE_STATE

    def __init__(self, num_envs: int, *, max_episode_length: int = 500, dtype: str = "float32", **common) -> None:
        self.max_episode_length = _check_length(max_episode_length)
        self.dtype = _dtype(dtype)
        self.default_time_limit = self.max_episode_length
        bounds = {"x": X_THRESHOLD * 2, "x_dot": np.inf, "theta": THETA_THRESHOLD * 2, "theta_dot": np.inf}
        high = np.array([bounds[k] for k in self._observed], dtype=np.float32)
        super().__init__(num_envs, spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(2), **common)

    def observe(self, state: State) -> torch.Tensor:
        """The float32 observation of ``state``."""
        return torch.stack([state[k] for k in self._observed], -1).to(torch.float32)

    def reward(self, terminated: torch.Tensor) -> torch.Tensor:
        """The reward of a step (Gymnasium gives 1 on every step, the terminating one included)."""
        return torch.ones(terminated.shape, device=self.device)

    def initial_state(self, n: int) -> State:
        values = self.rand(4, n, dtype=self.dtype) * 0.1 - 0.05  # U(-0.05, 0.05), as Gymnasium
        state = dict(zip(_CARTPOLE_STATE, values))
        state["obs"] = self.observe(state)
        return state

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        *values, terminated = cartpole_step(*(state[k] for k in _CARTPOLE_STATE), action)
        new = dict(zip(_CARTPOLE_STATE, values))
        new["obs"] = self.observe(new)
        return new, self.reward(terminated), terminated


class PositionOnlyCartPole(CartPole):
    """POPGym PositionOnlyCartPole: observe (x, theta); reward ``1 / max_episode_length`` per step.

    POPGym maps Gymnasium's reward 0 to -1, but Gymnasium's CartPole never gives 0 before
    a reset, so every step rewards ``1 / L`` and returns lie in (0, 1].
    """

    _observed = ("x", "theta")

    def __init__(self, num_envs: int, *, max_episode_length: int = 200, **kwargs) -> None:
        super().__init__(num_envs, max_episode_length=max_episode_length, **kwargs)

    def reward(self, terminated: torch.Tensor) -> torch.Tensor:
        """``1 / max_episode_length`` on every step."""
        return torch.full(terminated.shape, 1.0 / self.max_episode_length, device=self.device)


class VelocityOnlyCartPole(PositionOnlyCartPole):
    """POPGym VelocityOnlyCartPole: observe (x_dot, theta_dot); reward ``1 / max_episode_length`` per step.

    POPGym's reset returns (x, theta) instead of the velocities (a bug); here every
    observation, the first included, holds the velocities.
    """

    _observed = ("x_dot", "theta_dot")


class NoisyPositionOnlyCartPole(PositionOnlyCartPole):
    """POPGym NoisyPositionOnlyCartPole: (x, theta) plus N(0, noise_sigma) noise, clipped to the bounds."""

    def __init__(self, num_envs: int, *, noise_sigma: float = 0.1, **kwargs) -> None:
        self.noise_sigma = _check_sigma(noise_sigma)
        super().__init__(num_envs, **kwargs)
        self._low = torch.as_tensor(self.observation_space.low[:2], device=self.device)
        self._high = torch.as_tensor(self.observation_space.high[:2], device=self.device)

    def observe(self, state: State) -> torch.Tensor:
        """(x, theta) with clipped Gaussian noise."""
        obs = super().observe(state)
        return torch.clamp(obs + self.noise_sigma * self.randn(*obs.shape), self._low, self._high)


# ------------------------------------------------------------------------ Pendulum

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
G = 10.0
M = 1.0
L = 1.0
MAX_COST = math.pi**2 + 0.1 * MAX_SPEED**2 + 0.001 * MAX_TORQUE**2  # 16.2736044


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """Angles mapped to [-pi, pi), as Gymnasium's Pendulum."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def pendulum_step(th: torch.Tensor, thdot: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One step of Gymnasium's Pendulum: (next angle, next angular velocity, cost) for torques ``u`` (clipped)."""
    u = torch.clamp(u.to(th.dtype), -MAX_TORQUE, MAX_TORQUE)
    costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
    newthdot = thdot + (3 * G / (2 * L) * torch.sin(th) + 3.0 / (M * L**2) * u) * DT
    newthdot = torch.clamp(newthdot, -MAX_SPEED, MAX_SPEED)
    newth = th + newthdot * DT
    return newth, newthdot, costs


class Pendulum(NativeVecEnv):
    """Gymnasium Pendulum-v1: observe (cos, sin, theta_dot), reward minus the cost, truncated after 200 steps."""

    _position_only = False

    def __init__(self, num_envs: int, *, max_episode_length: int = 200, dtype: str = "float32", **common) -> None:
        self.max_episode_length = _check_length(max_episode_length)
        self.dtype = _dtype(dtype)
        self.default_time_limit = self.max_episode_length
        high = np.array([1.0, 1.0] if self._position_only else [1.0, 1.0, MAX_SPEED], dtype=np.float32)
        action_space = spaces.Box(-MAX_TORQUE, MAX_TORQUE, (1,), np.float32)
        super().__init__(num_envs, spaces.Box(-high, high, dtype=np.float32), action_space, **common)

    def observe(self, th: torch.Tensor, thdot: torch.Tensor) -> torch.Tensor:
        """The float32 observation of angles ``th`` and velocities ``thdot``."""
        parts = [torch.cos(th), torch.sin(th)] if self._position_only else [torch.cos(th), torch.sin(th), thdot]
        return torch.stack(parts, -1).to(torch.float32)

    def reward(self, costs: torch.Tensor) -> torch.Tensor:
        """Gymnasium's reward: minus the cost."""
        return (-costs).to(torch.float32)

    def initial_state(self, n: int) -> State:
        th = (self.rand(n, dtype=self.dtype) * 2 - 1) * math.pi
        thdot = self.rand(n, dtype=self.dtype) * 2 - 1
        return {"th": th, "thdot": thdot, "obs": self.observe(th, thdot)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        th, thdot, costs = pendulum_step(state["th"], state["thdot"], action[:, 0])
        terminated = torch.zeros(th.shape, dtype=torch.bool, device=self.device)
        return {"th": th, "thdot": thdot, "obs": self.observe(th, thdot)}, self.reward(costs), terminated


class PositionOnlyPendulum(Pendulum):
    """POPGym PositionOnlyPendulum: observe (cos, sin); reward ``(1 - 2 cost / max_cost) / L``, in [-1/L, 1/L]."""

    _position_only = True

    def reward(self, costs: torch.Tensor) -> torch.Tensor:
        """Gymnasium's reward mapped from [-max_cost, 0] to [-1, 1], divided by the episode length."""
        half = MAX_COST / 2
        return ((-costs + half) / half / self.max_episode_length).to(torch.float32)


class NoisyPositionOnlyPendulum(PositionOnlyPendulum):
    """POPGym NoisyPositionOnlyPendulum: (cos, sin) plus N(0, noise_sigma) noise, clipped to [-1, 1]."""

    def __init__(self, num_envs: int, *, noise_sigma: float = 0.1, **kwargs) -> None:
        self.noise_sigma = _check_sigma(noise_sigma)
        super().__init__(num_envs, **kwargs)

    def observe(self, th: torch.Tensor, thdot: torch.Tensor) -> torch.Tensor:
        """(cos, sin) with clipped Gaussian noise."""
        obs = super().observe(th, thdot) + self.noise_sigma * self.randn(th.shape[0], 2)
        return obs.clamp(-1.0, 1.0)
