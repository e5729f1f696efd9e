"""``check_env``: the platform's own diagnosis of a Gymnasium env before it is used for training."""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from lifelong.envs.backends import gym_env_factory, unsupported_space_reason

_STEPS = 30  # random-action steps examined
_SEED = 123
_EXPECTED_RESET = "reset(self, *, seed: int | None = None, options: dict | None = None)"


def check_env(target: str, kwargs: dict | None = None, import_module: str | None = None) -> list[str]:
    """Every problem that keeps Gymnasium env ``target`` (an id or ``module:Class``) from working here.

    Returns human-readable messages, each saying what is wrong and what is expected; an
    empty list means the env passed. A broken env never makes this function raise.
    """
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            env_fn = gym_env_factory(target, kwargs, import_module, disable_env_checker=True)
        except Exception as e:
            return [str(e)]
        try:
            env = env_fn()
        except Exception as e:
            return [f"constructing {target!r} with kwargs {kwargs or {}} raised {_exc(e)}; expected it to construct"]
        try:
            _Checker(env, problems).run()
        except Exception as e:  # a safety net: the checks themselves catch env errors
            problems.append(f"checking {target!r} stopped: {_exc(e)}")
        try:
            env.close()
        except Exception as e:
            problems.append(f"close() raised {_exc(e)}; expected it to release resources quietly")
    # a defect seen at several steps is reported once
    return list(dict.fromkeys(problems))


def _exc(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Checker:
    """Runs the checks on one constructed env, appending messages to ``problems``."""

    def __init__(self, env: Any, problems: list[str]) -> None:
        self.env = env
        self.problems = problems
        self.obs_space: spaces.Space | None = None
        self.act_space: spaces.Space | None = None
        self._kinds: set[str] = set()

    def _add(self, kind: str, message: str) -> None:
        """Record ``message`` unless a problem of the same kind was already recorded."""
        if kind not in self._kinds:
            self._kinds.add(kind)
            self.problems.append(message)

    def run(self) -> None:
        self.obs_space = self._space("observation_space")
        self.act_space = self._space("action_space")
        seed_ok = self._reset_signature()
        # without seed/options the wrappers of gym.make cannot forward reset; check the raw env
        env = self.env if seed_ok else getattr(self.env, "unwrapped", self.env)
        reset: Callable[[], Any] = (lambda: env.reset(seed=_SEED)) if seed_ok else env.reset
        first = self._reset(reset, "reset(seed=%d)" % _SEED if seed_ok else "reset()")
        if first is None:
            return
        if self.act_space is not None and self._steps(env, reset) and seed_ok:
            self._determinism(env)

    # -------------------------------------------------------------- spaces

    def _space(self, name: str) -> spaces.Space | None:
        try:
            space = getattr(self.env, name)
        except Exception as e:
            self.problems.append(
                f"{name} is missing ({_exc(e)}); expected a gymnasium.spaces.Box or Discrete set in __init__"
            )
            return None
        if space is None:
            self.problems.append(f"{name} is None; expected a gymnasium.spaces.Box or Discrete set in __init__")
            return None
        if not isinstance(space, spaces.Space):
            self.problems.append(
                f"{name} is {_short(space)} of type {type(space).__name__}, not a gymnasium.spaces.Space; "
                f"expected a gymnasium.spaces.Box or Discrete"
            )
            return None
        if isinstance(space, spaces.Box):
            low, high = np.asarray(space.low), np.asarray(space.high)
            bad = False
            for bound, values in (("low", low), ("high", high)):
                nan = np.argwhere(np.isnan(values))
                if len(nan):
                    self.problems.append(
                        f"{name} Box has NaN in {bound} at index {tuple(int(i) for i in nan[0])}; "
                        f"expected real bounds (use -inf/inf for unbounded)"
                    )
                    bad = True
            inverted = np.argwhere(low > high)
            if len(inverted):
                idx = tuple(int(i) for i in inverted[0])
                self.problems.append(
                    f"{name} Box has low > high at index {idx} (low={low[idx]}, high={high[idx]}); "
                    f"expected low <= high everywhere"
                )
                bad = True
            return None if bad else space
        reason = unsupported_space_reason(space)
        if reason is not None:
            self.problems.append(f"{name} is {_short(space)}: {reason}")
            return None
        return space

    # --------------------------------------------------------------- reset

    def _reset_signature(self) -> bool:
        target = getattr(self.env, "unwrapped", self.env)
        try:
            params = inspect.signature(target.reset).parameters
        except (TypeError, ValueError, AttributeError) as e:
            self.problems.append(f"reset cannot be inspected ({_exc(e)}); expected a method {_EXPECTED_RESET}")
            return False
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return True
        missing = [k for k in ("seed", "options") if k not in params]
        if missing:
            self.problems.append(
                f"reset() signature reset({', '.join(params)}) lacks the keyword argument(s) "
                f"{', '.join(repr(m) for m in missing)}; expected {_EXPECTED_RESET}"
            )
            return False
        return True

    def _reset(self, reset: Callable[[], Any], call: str) -> Any | None:
        try:
            out = reset()
        except Exception as e:
            self.problems.append(f"{call} raised {_exc(e)}; expected it to return (obs, info)")
            return None
        if not (isinstance(out, tuple) and len(out) == 2):
            what = f"a {len(out)}-tuple" if isinstance(out, tuple) else f"{type(out).__name__} {_short(out, 40)}"
            self.problems.append(f"{call} returned {what}; expected a tuple (obs, info)")
            return None
        obs, info = out
        if not isinstance(info, dict):
            self._add("reset_info", f"{call} returned info of type {type(info).__name__}; expected a dict")
        self._obs(obs, call)
        return obs

    # ---------------------------------------------------------------- obs

    def _obs(self, obs: Any, where: str) -> None:
        space = self.obs_space
        if space is None:
            return
        try:
            if isinstance(space, spaces.Discrete):
                self._discrete_obs(obs, space, where)
            else:
                self._box_obs(obs, space, where)
        except Exception as e:
            self._add("obs_examine", f"observation from {where} could not be examined ({_exc(e)}): {_short(obs)}")

    def _discrete_obs(self, obs: Any, space: spaces.Discrete, where: str) -> None:
        value = obs.item() if isinstance(obs, np.ndarray) and obs.shape == () else obs
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
            self._add(
                "obs_discrete_type",
                f"observation from {where} is {_short(obs)} of type {type(obs).__name__}; "
                f"expected an integer for observation_space {space}",
            )
            return
        lo, hi = int(space.start), int(space.start) + int(space.n) - 1
        if not lo <= int(value) <= hi:
            self._add(
                "obs_discrete_range",
                f"observation from {where} is {int(value)}, outside observation_space {space}; "
                f"expected an integer in [{lo}, {hi}]",
            )

    def _box_obs(self, obs: Any, space: spaces.Box, where: str) -> None:
        if not isinstance(obs, np.ndarray):
            self._add(
                "obs_type",
                f"observation from {where} is a {type(obs).__name__}, not a numpy array; expected "
                f"np.ndarray of dtype {space.dtype} and shape {space.shape}",
            )
            obs = np.asarray(obs)
        elif obs.dtype != space.dtype:
            self._add(
                "obs_dtype",
                f"observation from {where} has dtype {obs.dtype} but observation_space has dtype {space.dtype}; "
                f"expected obs.astype(np.{space.dtype})",
            )
        if obs.shape != space.shape:
            self._add(
                "obs_shape",
                f"observation from {where} has shape {obs.shape} but observation_space has shape {space.shape}; "
                f"expected shape {space.shape}",
            )
            return
        if not np.issubdtype(obs.dtype, np.number):
            self._add("obs_numeric", f"observation from {where} has non-numeric dtype {obs.dtype}; expected numbers")
            return
        if np.issubdtype(obs.dtype, np.floating) and np.isnan(obs).any():
            idx = tuple(int(i) for i in np.argwhere(np.isnan(obs))[0])
            self._add("obs_nan", f"observation from {where} contains NaN at index {idx}; expected real values")
            return
        outside = np.argwhere((obs < space.low) | (obs > space.high))
        if len(outside):
            idx = tuple(int(i) for i in outside[0])
            self._add(
                "obs_bounds",
                f"observation from {where} is outside observation_space bounds at index {idx}: "
                f"{obs[idx]} not in [{space.low[idx]}, {space.high[idx]}]; expected low <= obs <= high",
            )

    # ---------------------------------------------------------------- step

    def _steps(self, env: Any, reset: Callable[[], Any]) -> bool:
        """Random-action steps; True when step worked well enough to test determinism."""
        assert self.act_space is not None
        self.act_space.seed(_SEED)
        for t in range(_STEPS):
            action = self.act_space.sample()
            call = f"step({_short(action, 40)}) at step {t}"
            try:
                out = env.step(action)
            except Exception as e:
                self.problems.append(f"{call} raised {_exc(e)}; expected (obs, reward, terminated, truncated, info)")
                return False
            if not (isinstance(out, tuple) and len(out) == 5):
                what = f"a {len(out)}-tuple" if isinstance(out, tuple) else f"{type(out).__name__}"
                self.problems.append(
                    f"step() returned {what}; expected the 5-tuple (obs, reward, terminated, truncated, info)"
                    + (" (the old Gym API with one done flag is not supported)" if what == "a 4-tuple" else "")
                )
                return False
            obs, reward, terminated, truncated, info = out
            self._obs(obs, "step()")
            self._reward(reward)
            for name, flag in (("terminated", terminated), ("truncated", truncated)):
                if not isinstance(flag, (bool, np.bool_)):
                    self._add(
                f"flag_{name}",
                        f"step() returned {name}={_short(flag, 40)} of type {type(flag).__name__}; expected a bool",
                    )
            if not isinstance(info, dict):
                self._add("step_info", f"step() returned info of type {type(info).__name__}; expected a dict")
            if _truthy(terminated) or _truthy(truncated):
                if self._reset(reset, "reset() after the episode ended") is None:
                    return False
        return True

    def _reward(self, reward: Any) -> None:
        value = reward.item() if isinstance(reward, np.ndarray) and reward.shape == () else reward
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
            self._add(
                "reward_type",
                f"step() returned reward {_short(reward, 40)} of type {type(reward).__name__}; "
                f"expected a real scalar (float or int)",
            )
        elif not np.isfinite(float(value)):
            self._add("reward_finite", f"step() returned reward {value}; expected a finite number")

    # --------------------------------------------------------- determinism

    def _determinism(self, env: Any) -> None:
        """Same seed, same actions: the same observations."""
        assert self.act_space is not None
        runs = []
        for _ in range(2):
            try:
                obs, _ = env.reset(seed=_SEED)
                trace = [np.array(obs, copy=True)]
                self.act_space.seed(_SEED)
                for _ in range(5):
                    obs, _, terminated, truncated, _ = env.step(self.act_space.sample())
                    trace.append(np.array(obs, copy=True))
                    if _truthy(terminated) or _truthy(truncated):
                        break
            except Exception as e:
                self.problems.append(f"determinism check could not run: {_exc(e)}")
                return
            runs.append(trace)
        a, b = runs
        if not _same(a[0], b[0]):
            self.problems.append(
                f"reset(seed={_SEED}) returned {_short(a[0], 60)} then {_short(b[0], 60)}; expected the same "
                f"observation for the same seed (call super().reset(seed=seed) and draw randomness from self.np_random)"
            )
        elif len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b)):
            self.problems.append(
                f"after reset(seed={_SEED}) the same actions gave different observations; expected step() to "
                f"draw randomness only from self.np_random"
            )


def _truthy(flag: Any) -> bool:
    try:
        return bool(np.any(flag))
    except Exception:
        return False


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
