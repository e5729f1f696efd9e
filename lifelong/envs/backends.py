"""Env backends (EnvPool, Gymnasium), each normalised to the same-step autoreset contract.

Importing this module registers the backends in ``ENV_BACKENDS``. Conventions shared by
every backend:

* observations are float32 tensors ``[B, *obs_shape]`` on the backend's device; a
  ``Box`` observation keeps its values (uint8 pixels are *not* rescaled) and its space
  is reported unchanged; a ``Discrete(n)`` observation is one-hot encoded and reported
  as ``Box(0, 1, (n,), float32)``;
* actions are int64 ``[B]`` indices ``0..n-1`` for ``Discrete(n, start)`` (the backend
  adds ``start``) and float32 ``[B, *shape]`` for ``Box``, clipped to the bounds;
* ``reset(seed)`` seeds env ``i`` with ``seed + i``; ``reset()`` on a fresh env uses the
  construction seed, later calls continue each env's random stream;
* ``Step`` tensors must be treated as read-only: when no episode ended, ``final_obs``
  is the ``obs`` tensor itself.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lifelong.config import ConfigError, EnvConfig
from lifelong.envs.base import Step, VecEnv
from lifelong.envs.params import ParamSlots, ParamSpace
from lifelong.registry import ENV_BACKENDS

# --------------------------------------------------------------------------- spaces


def unsupported_space_reason(space: Any) -> str | None:
    """Why ``space`` cannot be used by the platform, or None when it is a usable Box/Discrete."""
    if not isinstance(space, spaces.Space):
        return f"{space!r} is not a gymnasium.spaces.Space"
    if isinstance(space, spaces.Discrete):
        return None if int(space.n) > 0 else f"{space} has no elements (n must be > 0)"
    if isinstance(space, spaces.Box):
        if np.isnan(space.low).any() or np.isnan(space.high).any():
            return f"{space} has NaN bounds"
        if (space.low > space.high).any():
            return f"{space} has low > high"
        return None
    return f"{type(space).__name__} spaces are not supported (the platform supports Box and Discrete)"


def _check_spaces(obs_space: Any, act_space: Any, label: str) -> None:
    for name, space in (("observation", obs_space), ("action", act_space)):
        reason = unsupported_space_reason(space)
        if reason is not None:
            raise ConfigError(f"env.id: {label} has an unusable {name} space: {reason}")


def exposed_observation_space(space: gym.Space) -> gym.Space:
    """The observation space agents see: Discrete(n) becomes its one-hot Box(0, 1, (n,))."""
    if isinstance(space, spaces.Discrete):
        return spaces.Box(0.0, 1.0, (int(space.n),), np.float32)
    return space


def _obs_converter(space: gym.Space, device: torch.device, copy: bool) -> Callable[[np.ndarray], torch.Tensor]:
    """A function turning a batched numpy observation into a float32 tensor on ``device``.

    ``copy=False`` lets a float32 array be shared with the tensor; only safe when the
    producer never writes into that array again (EnvPool allocates per batch).
    """
    on_cpu = device.type == "cpu"
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def discrete(arr: np.ndarray) -> torch.Tensor:
            idx = torch.from_numpy(np.asarray(arr, dtype=np.int64).reshape(-1) - start)
            out = torch.nn.functional.one_hot(idx, n).to(torch.float32)
            return out if on_cpu else out.to(device)

        return discrete

    if copy:

        def box_copy(arr: np.ndarray) -> torch.Tensor:
            out = torch.from_numpy(np.array(arr, dtype=np.float32))
            return out if on_cpu else out.to(device)

        return box_copy

    def box(arr: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        return out if on_cpu else out.to(device)

    return box


def _action_converter(space: gym.Space) -> Callable[[torch.Tensor], np.ndarray]:
    """A function turning a batched action tensor into the numpy array the backend expects."""
    if isinstance(space, spaces.Discrete):
        start = int(space.start)

        def discrete(action: torch.Tensor) -> np.ndarray:
            arr = action.detach().cpu().numpy()
            return arr + start if start else arr

        return discrete

    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    dtype = space.dtype

    def box(action: torch.Tensor) -> np.ndarray:
        a = torch.clamp(action.detach().to("cpu", torch.float32), low, high)
        return a.numpy().astype(dtype, copy=False)

    return box


def _import_module(name: str | None) -> None:
    if not name:
        return
    try:
        importlib.import_module(name)
    except Exception as e:  # any failure while importing user code is a config problem
        raise ConfigError(f"env.import: cannot import module {name!r} ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------- envpool


class EnvPoolVecEnv(VecEnv):
    """EnvPool's C++ thread pool; its next-step autoreset is turned into same-step by subset resets."""

    def __init__(self, cfg: EnvConfig, *, num_envs: int, seed: int, device: torch.device) -> None:
        import envpool

        _import_module(cfg.import_)
        all_ids = envpool.list_all_envs()
        if cfg.id not in all_ids:
            close = difflib.get_close_matches(cfg.id, all_ids, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"env.id: {cfg.id!r} is not an EnvPool id{hint} "
                f"(use env.backend=gymnasium for Gymnasium ids)"
            )
        reserved = sorted({"seed", "num_envs", "env_type"} & set(cfg.kwargs))
        if reserved:
            raise ConfigError(
                f"env.kwargs: {', '.join(reserved)} cannot be set here (seed comes from run.seed, "
                f"num_envs from env.num_envs)"
            )
        self._id = cfg.id
        self._user_kwargs = dict(cfg.kwargs)
        self._make_kwargs: dict[str, Any] = {
            "env_type": "gymnasium",
            "num_envs": num_envs,
            "num_threads": cfg.num_threads,
            **cfg.kwargs,
        }
        if cfg.max_episode_steps is not None:
            self._make_kwargs["max_episode_steps"] = cfg.max_episode_steps
        self.num_envs = num_envs
        self.device = torch.device(device)
        self._env = self._make(seed)
        self._seed = seed
        self._fresh = True  # built with self._seed and never reset yet
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precision lowered.*")  # see _make
            raw_obs_space = self._env.observation_space
            self.action_space = self._env.action_space
        _check_spaces(raw_obs_space, self.action_space, f"EnvPool env {cfg.id!r}")
        self.observation_space = exposed_observation_space(raw_obs_space)
        self._obs = _obs_converter(raw_obs_space, self.device, copy=False)
        self._act = _action_converter(self.action_space)

    def _make(self, seed: int) -> Any:
        import envpool

        try:
            with warnings.catch_warnings():
                # EnvPool declares float64 bounds for float32 spaces; Gymnasium warns about the cast each time.
                warnings.filterwarnings("ignore", message=".*precision lowered.*")
                return envpool.make(self._id, seed=seed, **self._make_kwargs)
        except TypeError as e:
            fields = [f for f in envpool.make_spec(self._id).config._fields if f not in ("num_envs", "seed")]
            raise ConfigError(
                f"env.kwargs: EnvPool {self._id!r} rejected {self._user_kwargs!r} ({e}); "
                f"accepted keys: {', '.join(fields)}"
            ) from e

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env; a new seed rebuilds the pool, since EnvPool seeds only at construction."""
        if seed is not None and (seed != self._seed or not self._fresh):
            self._env.close()
            self._env = self._make(seed)
            self._seed = seed
        self._fresh = False
        obs, _ = self._env.reset()
        return self._obs(obs)

    def step(self, action: torch.Tensor) -> Step:
        """Step all envs; ended envs are reset at once so ``obs`` starts their next episode."""
        obs, reward, terminated, truncated, _ = self._env.step(self._act(action))
        done = terminated | truncated
        obs_t = self._obs(obs)
        final_t = obs_t
        if done.any():
            reset_obs, reset_info = self._env.reset(np.flatnonzero(done))
            obs = obs.copy()
            obs[reset_info["env_id"]] = reset_obs
            obs_t = self._obs(obs)
        reward = reward.astype(np.float32, copy=False)
        dev = self.device
        if dev.type == "cpu":
            return Step(
                obs_t,
                torch.from_numpy(reward),
                torch.from_numpy(terminated),
                torch.from_numpy(truncated),
                torch.from_numpy(done),
                final_t,
                {},
            )
        return Step(
            obs_t,
            torch.from_numpy(reward).to(dev),
            torch.from_numpy(terminated).to(dev),
            torch.from_numpy(truncated).to(dev),
            torch.from_numpy(done).to(dev),
            final_t,
            {},
        )

    def close(self) -> None:
        """Stop EnvPool's worker threads."""
        close = getattr(self._env, "close", None)
        if close is not None:
            close()


@ENV_BACKENDS.register("envpool", summary="EnvPool C++ batched envs (threads), e.g. CartPole-v1, Atari, MuJoCo.")
def make_envpool(cfg: EnvConfig, *, num_envs: int, seed: int, device: torch.device) -> VecEnv:
    """Build an EnvPool-backed VecEnv for ``cfg.id``."""
    return EnvPoolVecEnv(cfg, num_envs=num_envs, seed=seed, device=device)


# ----------------------------------------------------------------------- gymnasium


def gym_env_factory(
    target: str,
    kwargs: dict | None = None,
    import_module: str | None = None,
    max_episode_steps: int | None = None,
    disable_env_checker: bool | None = None,
) -> Callable[[], gym.Env]:
    """A constructor for one Gymnasium env given a registered id or ``module.path:ClassName``.

    Raises ``ConfigError`` (one line) for a module that cannot be imported, an unknown id
    or a missing class; constructing the env is left to the caller.
    """
    kwargs = dict(kwargs or {})
    _import_module(import_module)
    name = target
    if ":" in target:
        module_name, _, name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise ConfigError(
                f"env.id: cannot import module {module_name!r} of {target!r} ({type(e).__name__}: {e})"
            ) from e
        cls = getattr(module, name, None)
        if callable(cls):  # an env class, or a function returning an env
            if max_episode_steps is None:
                return lambda: cls(**kwargs)
            return lambda: gym.wrappers.TimeLimit(cls(**kwargs), max_episode_steps=max_episode_steps)
        if name not in gym.registry:
            classes = [k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, gym.Env)]
            close = difflib.get_close_matches(name, classes, n=3)
            hint = f"; did you mean {', '.join(repr(f'{module_name}:{c}') for c in close)}?" if close else ""
            raise ConfigError(
                f"env.id: module {module_name!r} has no env class or registered id {name!r}{hint} "
                f"(env classes there: {', '.join(classes) or 'none'})"
            )
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"env.id: {name!r} is not a registered Gymnasium id{hint} "
            f"(set env.import to the module that registers it, or give 'module.path:ClassName')"
        )
    make_kwargs: dict[str, Any] = dict(kwargs)
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = max_episode_steps
    if disable_env_checker is not None:
        make_kwargs["disable_env_checker"] = disable_env_checker
    return lambda: gym.make(name, **make_kwargs)


PARAMS_ATTR = "lifelong_pending_params"


class ParamsOnReset(gym.Wrapper):
    """Gives every ``reset`` of the env ``options["params"]``: the pending params the vector env last set here.

    Vector envs reset their sub-envs themselves (autoreset) and pass one ``options`` dict
    to all of them; this wrapper makes each sub-env use its own params, whatever the
    autoreset mode. The backend writes the attribute ``lifelong_pending_params`` with
    ``set_attr``.
    """

    def __init__(self, env: gym.Env, params: np.ndarray) -> None:
        super().__init__(env)
        setattr(self, PARAMS_ATTR, params)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the env with ``options["params"]`` set to the pending params (explicit ones win)."""
        options = dict(options or {})
        options.setdefault("params", np.array(getattr(self, PARAMS_ATTR), dtype=np.float32))
        return self.env.reset(seed=seed, options=options)


def declared_param_space(env: gym.Env, label: str) -> tuple[ParamSpace | None, Any]:
    """(param space, default params or None) that ``env.unwrapped`` declares; ConfigError if malformed."""
    inner = env.unwrapped
    space = getattr(inner, "param_space", None)
    if space is None:
        return None, None
    if not isinstance(space, ParamSpace):
        try:
            space = ParamSpace.from_dict(dict(space))
        except (TypeError, KeyError, ValueError) as e:
            raise ConfigError(
                f"env.id: {label} has param_space {space!r}, expected a lifelong ParamSpace or a dict with "
                f"names, low and high ({type(e).__name__}: {e})"
            ) from e
    return space, getattr(inner, "default_params", None)


def declared_test_set(env: gym.Env, label: str) -> tuple[torch.Tensor | None, float | None]:
    """(curriculum test tasks ``[N, P]`` or None, mastered return or None) that ``env.unwrapped`` declares.

    The tasks come from ``test_set()`` (or a ``test_set`` array), the threshold from
    ``mastered_return``; ConfigError when either is not numeric.
    """
    inner = env.unwrapped
    source = getattr(inner, "test_set", None)
    threshold = getattr(inner, "mastered_return", None)
    try:
        tasks = None if source is None else torch.as_tensor(
            np.asarray(source() if callable(source) else source, dtype=np.float32))
        threshold = None if threshold is None else float(threshold)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.id: {label} has an unusable test_set or mastered_return "
                          f"({type(e).__name__}: {e}); expected a [N, P] array of params and a number") from e
    return tasks, threshold


_AUTORESET = {
    "same_step": gym.vector.AutoresetMode.SAME_STEP,
    "next_step": gym.vector.AutoresetMode.NEXT_STEP,
    "disabled": gym.vector.AutoresetMode.DISABLED,
}


class GymnasiumVecEnv(VecEnv):
    """Gymnasium Sync/AsyncVectorEnv in any autoreset mode, normalised to same-step autoreset.

    SAME_STEP reads ``info["final_obs"]``; NEXT_STEP and DISABLED reset the ended envs
    right away through ``reset(options={"reset_mask": done})``, which in Gymnasium 1.x
    also clears NEXT_STEP's pending autoreset, so its extra reset step never happens.

    **Parameterized envs.** An env whose ``unwrapped`` has an attribute ``param_space``
    (a ``lifelong.envs.params.ParamSpace``, or a dict ``{"names": [...], "low": [...],
    "high": [...]}``) takes per-episode params: every reset of it, the vector env's
    autoresets included, gets ``options={"params": np.ndarray float32 [P]}`` (through
    ``ParamsOnReset``, which holds each sub-env's pending params), and the env builds
    its episode from them. An optional attribute ``default_params`` (``[P]``) gives the
    params used until ``set_params`` is called (else the middle of the box). That is
    all a user's env needs; see ``lifelong.envs.stump_tracks`` for an example and
    ``VecEnv`` for the pending/current contract. A sub-env's curriculum test set
    (``test_set()`` and ``mastered_return``, read once from a probe env) is forwarded as
    this vector env's ``test_set()`` and ``mastered_return``, where a curriculum's
    ``test_set: env`` looks for them.
    """

    def __init__(self, cfg: EnvConfig, *, num_envs: int, seed: int, device: torch.device) -> None:
        env_fn = gym_env_factory(cfg.id, cfg.kwargs, cfg.import_, cfg.max_episode_steps)
        try:
            probe = env_fn()
        except TypeError as e:
            raise ConfigError(f"env.kwargs: constructing {cfg.id!r} with {cfg.kwargs!r} failed ({e})") from e
        try:
            _check_spaces(probe.observation_space, probe.action_space, f"Gymnasium env {cfg.id!r}")
            self.param_space, default = declared_param_space(probe, f"Gymnasium env {cfg.id!r}")
            self._test_set, self.mastered_return = declared_test_set(probe, f"Gymnasium env {cfg.id!r}")
        finally:
            probe.close()
        self.device = torch.device(device)
        self._params: ParamSlots | None = None
        make_one: Callable[[], gym.Env] = env_fn
        if self.param_space is not None:
            if default is not None:
                default = torch.as_tensor(np.asarray(default, dtype=np.float32))
            try:
                self._params = ParamSlots(self.param_space, num_envs, default, self.device)
            except ValueError as e:
                raise ConfigError(f"env.id: Gymnasium env {cfg.id!r} has bad default_params ({e})") from e
            first = self._params.default.cpu().numpy()

            def make_with_params() -> gym.Env:
                return ParamsOnReset(env_fn(), first)

            make_one = make_with_params

        self._mode = _AUTORESET[cfg.autoreset_mode]
        vec_cls = gym.vector.AsyncVectorEnv if cfg.vectorization == "async" else gym.vector.SyncVectorEnv
        # copy=False: the converters below copy into fresh tensors anyway
        self._vec = vec_cls([make_one] * num_envs, copy=False, autoreset_mode=self._mode)
        self.num_envs = num_envs
        raw_obs_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.observation_space = exposed_observation_space(raw_obs_space)
        self._obs = _obs_converter(raw_obs_space, self.device, copy=True)
        self._act = _action_converter(self.action_space)
        self._seed = seed
        self._fresh = True

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env (env i seeded with seed + i; the construction seed on the first reset)."""
        if seed is None and self._fresh:
            seed = self._seed
        self._fresh = False
        obs, _ = self._vec.reset(seed=seed)
        if self._params is not None:
            self._params.begin()
        return self._obs(obs)

    def set_params(self, params: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Pending params for every env or for ``rows`` (see ``VecEnv.set_params``), sent to the sub-envs."""
        if self._params is None:
            return super().set_params(params, rows)
        self._params.set(params, rows)
        self._vec.set_attr(PARAMS_ATTR, list(self._params.pending.cpu().numpy()))

    @property
    def current_params(self) -> torch.Tensor | None:
        """Params ``[B, P]`` of the running episodes (None for envs without parameters)."""
        return None if self._params is None else self._params.current

    def test_set(self) -> torch.Tensor | None:
        """The sub-env's fixed curriculum test tasks ``[N, P]`` (a copy), or None when it declares none."""
        return None if self._test_set is None else self._test_set.clone()

    def step(self, action: torch.Tensor) -> Step:
        """Step all envs; ended envs already show their next episode's first obs."""
        obs, reward, terminated, truncated, info = self._vec.step(self._act(action))
        done = terminated | truncated
        obs_t = self._obs(obs)
        final_t = obs_t
        if done.any():
            if self._mode is gym.vector.AutoresetMode.SAME_STEP:
                final = np.array(obs)
                final_obs = info["final_obs"]
                for i in np.flatnonzero(info["_final_obs"]):
                    final[i] = final_obs[i]
                final_t = self._obs(final)
            else:
                obs, _ = self._vec.reset(options={"reset_mask": done})
                obs_t = self._obs(obs)
        dev = self.device
        reward_t = torch.from_numpy(reward.astype(np.float32))
        term_t, trunc_t, done_t = torch.from_numpy(terminated), torch.from_numpy(truncated), torch.from_numpy(done)
        if dev.type != "cpu":
            reward_t, term_t, trunc_t, done_t = (t.to(dev) for t in (reward_t, term_t, trunc_t, done_t))
        step_info = {}
        if self._params is not None:
            step_info["params"] = self._params.begin(done_t) if done.any() else self._params.current
        return Step(obs_t, reward_t, term_t, trunc_t, done_t, final_t, step_info)

    def close(self) -> None:
        """Close the vector env (and its worker processes)."""
        self._vec.close()


@ENV_BACKENDS.register(
    "gymnasium", summary="Any Gymnasium id or module:Class, Sync/AsyncVectorEnv, every autoreset mode."
)
def make_gymnasium(cfg: EnvConfig, *, num_envs: int, seed: int, device: torch.device) -> VecEnv:
    """Build a Gymnasium vector env for ``cfg.id`` (registered id or ``module:Class``)."""
    return GymnasiumVecEnv(cfg, num_envs=num_envs, seed=seed, device=device)
