"""Small Gymnasium envs for the env-layer tests: predictable ones, and deliberately broken ones for check_env."""

from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def episode_length(seed: int, episode: int) -> int:
    """Length of episode ``episode`` of a FixedLengthEnv seeded with ``seed`` (2..6 steps)."""
    return 2 + (7 * seed + 3 * episode) % 5


class FixedLengthEnv(gym.Env):
    """Observation ``[seed, episode, t]``; episode lengths from ``episode_length``.

    Even episodes terminate, odd ones truncate; reward is ``action + 0.5``. ``reset(seed=s)``
    restarts at episode 0 of seed ``s``; a reset without seed starts the next episode.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, np.inf, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._seed = 0
        self._episode = -1
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._seed, self._episode, self._t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._episode = seed, 0
        else:
            self._episode += 1
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        end = self._t >= episode_length(self._seed, self._episode)
        even = self._episode % 2 == 0
        return self._obs(), float(action) + 0.5, bool(end and even), bool(end and not even), {}


class EchoActionEnv(gym.Env):
    """Box actions in [-1, 1]^2; the observation is the action received; episodes last 3 steps."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        return np.asarray(action, np.float32), 0.0, self._t >= 3, False, {}


class DiscreteEchoEnv(gym.Env):
    """Discrete(5) observations equal to the action received from Discrete(3, start=2)."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(5)
        self.action_space = spaces.Discrete(3, start=2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        return int(action), 0.0, False, False, {}


class DictObsEnv(FixedLengthEnv):
    """Unsupported: a Dict observation space."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Dict({"x": spaces.Box(0.0, 1.0, (1,), np.float32)})


# ------------------------------------------------------------------ broken envs


class RaisesOnInit(FixedLengthEnv):
    """Construction fails."""

    def __init__(self) -> None:
        raise RuntimeError("simulator licence not found")


class ResetWithoutSeed(FixedLengthEnv):
    """Old-style reset without seed/options keywords."""

    def reset(self) -> tuple[np.ndarray, dict]:  # type: ignore[override]
        return super().reset()


class ResetReturnsObsOnly(FixedLengthEnv):
    """reset returns only the observation."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:  # type: ignore[override]
        return super().reset(seed=seed, options=options)[0]


class NoObservationSpace(gym.Env):
    """Never sets observation_space."""

    def __init__(self) -> None:
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(3, np.float32), 0.0, False, False, {}


class ActionSpaceNotSpace(FixedLengthEnv):
    """action_space is a plain tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = (0, 1)  # type: ignore[assignment]


class UnsupportedActionSpace(FixedLengthEnv):
    """MultiDiscrete actions, which the platform does not support."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.MultiDiscrete([2, 2])


class InvertedBoxBounds(FixedLengthEnv):
    """Observation Box with low > high in one dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(0.0, 100.0, (3,), np.float32)
        self.observation_space.low[1] = 200.0


class NaNBoxBounds(FixedLengthEnv):
    """Observation Box with a NaN upper bound."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(0.0, 100.0, (3,), np.float32)
        self.observation_space.high[2] = np.nan


class WrongObsDtype(FixedLengthEnv):
    """Observations are float64 while the space says float32."""

    def _obs(self) -> np.ndarray:
        return super()._obs().astype(np.float64)


class WrongObsShape(FixedLengthEnv):
    """Observations have 4 entries while the space has 3."""

    def _obs(self) -> np.ndarray:
        return np.append(super()._obs(), np.float32(0.0))


class ObsOutOfBounds(FixedLengthEnv):
    """Observations go below the space's lower bound."""

    def _obs(self) -> np.ndarray:
        obs = super()._obs()
        obs[0] = -1.0
        return obs


class FourTupleStep(FixedLengthEnv):
    """Old Gym API: step returns (obs, reward, done, info)."""

    def step(self, action: Any) -> Any:  # type: ignore[override]
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class ArrayReward(FixedLengthEnv):
    """Reward is a length-1 array instead of a scalar."""

    def step(self, action: Any) -> Any:  # type: ignore[override]
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, np.array([reward]), terminated, truncated, info


class IntDoneFlags(FixedLengthEnv):
    """terminated/truncated are ints instead of bools."""

    def step(self, action: Any) -> Any:  # type: ignore[override]
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, int(terminated), int(truncated), info


class InfoNotDict(FixedLengthEnv):
    """step's info is a list."""

    def step(self, action: Any) -> Any:  # type: ignore[override]
        obs, reward, terminated, truncated, _ = super().step(action)
        return obs, reward, terminated, truncated, []


class NondeterministicReset(FixedLengthEnv):
    """Draws the first observation from Python's global RNG instead of self.np_random."""

    def _obs(self) -> np.ndarray:
        obs = super()._obs()
        obs[2] += random.random()
        return obs


class StepRaises(FixedLengthEnv):
    """step crashes."""

    def step(self, action: Any) -> Any:  # type: ignore[override]
        raise ValueError("physics exploded")


class ChainEnv(gym.Env):
    """Reward 1 per step; each step ends the episode with probability 1/3, by termination in even
    episodes and by truncation in odd ones.

    The observation names only the episode's kind (``[0.5, 0]`` terminating, ``[0.5, 1]``
    truncating) and actions do nothing. With discount ``gamma`` and a constant hazard the
    values are known and the same at every step (so also for a critic with memory): a critic
    that bootstraps through truncation and not through termination converges to
    ``1 / (1 - gamma)`` on truncating episodes and to ``1 / (1 - 2 gamma / 3)`` on terminating ones.
    """

    def __init__(self, discrete: bool = False) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2) if discrete else spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._episode = -1

    def _obs(self) -> np.ndarray:
        return np.array([0.5, self._episode % 2], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._episode += 1
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        end = bool(self.np_random.random() < 1 / 3)
        truncating = self._episode % 2 == 1
        return self._obs(), 1.0, end and not truncating, end and truncating, {}


class CueEnv(gym.Env):
    """Remember a bit: step 0 shows a cue (``[+-1, 0]``), then ``gap`` blank steps, then a query
    (``[0, 1]``) whose action must repeat the cue (action 1 for +1) for reward 1; the episode
    then terminates. Only a policy with memory beats 1/2 on the query.
    """

    def __init__(self, gap: int = 2) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.gap = gap
        self._t = 0
        self._cue = 1

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(2))
        return np.array([2 * self._cue - 1, 0], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        if self._t <= self.gap:
            query = self._t == self.gap
            return np.array([0, float(query)], dtype=np.float32), 0.0, False, False, {}
        return np.zeros(2, dtype=np.float32), float(int(action) == self._cue), True, False, {}
