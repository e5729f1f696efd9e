"""Stable-Baselines3 adapter: SB3's PPO, A2C, DQN, SAC and TD3 trained on the platform's envs and run loop.

``agent.name: sb3`` builds an SB3 model (``agent.algo``) around ``SB3VecEnv``, which
presents any platform ``VecEnv`` (EnvPool, Gymnasium, normalisers included) through
SB3's ``VecEnv`` API. Same-step autoreset maps exactly onto SB3's convention: on a done
the returned observation is the reset one, ``infos[i]["terminal_observation"]`` holds
``final_obs`` and ``infos[i]["TimeLimit.truncated"]`` is ``truncated and not terminated``.

SB3 owns the learning loop; a callback keeps ``run.step`` equal to ``model.num_timesteps``,
forwards finished episodes to the run's logger and calls ``run.tick`` at the start of
every rollout, i.e. after each update (every ``train_freq`` steps for off-policy
algorithms). At that point the policy, optimizers and replay buffer are consistent with
``num_timesteps``, so a checkpoint taken there resumes exactly: ``state_dict`` holds the
tensors SB3 itself would save, the update counters, DQN's exploration state, the env
normalisers and, with ``save_replay_buffer``, the replay buffer. Hyperparameters follow
RL-Zoo's names; ``"lin_<value>"`` strings are linear schedules as in RL-Zoo.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import gymnasium as gym
import numpy as np
import stable_baselines3 as sb3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv as SB3BaseVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
from torch import nn

from lifelong.agents.base import Agent, Trainer
from lifelong.config import Config, ConfigError, setting
from lifelong.envs import VecEnv, make_env
from lifelong.envs.base import Step
from lifelong.envs.wrappers import NormalizeObs, VecEnvWrapper
from lifelong.memory.base import State
from lifelong.registry import AGENTS

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "PPO": sb3.PPO,
    "A2C": sb3.A2C,
    "DQN": sb3.DQN,
    "SAC": sb3.SAC,
    "TD3": sb3.TD3,
}

# Hyperparameters that SB3 accepts as a schedule of the remaining progress (RL-Zoo's "lin_<value>").
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

# Constructor arguments the adapter sets itself, with where to set them instead.
RESERVED_KEYS = {
    "policy": "use agent.policy",
    "env": "the env comes from the env section",
    "policy_kwargs": "use agent.policy_kwargs",
    "device": "use run.device",
    "seed": "use run.seed",
    "verbose": "the run's logger reports progress",
    "tensorboard_log": "the run writes TensorBoard files to its run dir",
    "_init_setup_model": "the adapter always builds the model",
    "n_envs": "use env.num_envs",
    "n_timesteps": "use run.total_steps",
    "normalize": "use env.normalize_obs and env.normalize_reward",
}

_SCHEDULE = re.compile(r"^lin_(.+)$")

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "selu": nn.SELU,
    "sigmoid": nn.Sigmoid,
}

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}

# Replay-buffer arrays saved with ``save_replay_buffer`` (absent ones are skipped).
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

# Scalars of off-policy and DQN state that SB3 keeps outside tensors and that a resume needs.
_COUNTERS = ("_n_updates", "_n_calls", "_episode_num")


# ---------------------------------------------------------------------- config


def parse_schedule(key: str, value: Any) -> float | Callable[[float], float]:
    """A number, or ``"lin_<value>"`` as a linear schedule from ``value`` (progress 1) to 0 (progress 0).

    Strings are parsed, never evaluated; anything else raises a one-line ``ConfigError`` naming ``key``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a number or a schedule (allowed: a number or 'lin_<number>')")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        match = _SCHEDULE.match(value.strip())
        if match:
            try:
                initial = float(match.group(1))
            except ValueError:
                initial = math.nan
            if math.isfinite(initial):
                return LinearSchedule(start=initial, end=0.0, end_fraction=1.0)
    raise ConfigError(
        f"{key}: {value!r} is not a number or a schedule (allowed: a number or 'lin_<number>', e.g. 'lin_1e-3')"
    )


def _named_class(
    key: str, value: Any, table: dict[str, type], base: type, module: Any, prefixes: Sequence[str]
) -> type:
    """A class given by name: a short name from ``table`` or a class of ``module`` (``nn.Tanh``, ``Tanh``)."""
    if isinstance(value, type) and issubclass(value, base):
        return value
    if isinstance(value, str):
        name = value.strip()
        if name.lower() in table:
            return table[name.lower()]
        for prefix in prefixes:
            name = name.removeprefix(prefix)
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, base):
            return found
    raise ConfigError(
        f"{key}: {value!r} is not allowed (allowed: {', '.join(table)} or a class name of {module.__name__})"
    )


def _check_keys(algo: str, kwargs: dict[str, Any], prefix: str) -> None:
    cls = ALGOS[algo]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    valid = [p for p in allowed if p not in RESERVED_KEYS]
    for key in kwargs:
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}kwargs: key {key!r} is not a string")
        if key in RESERVED_KEYS:
            raise ConfigError(f"{prefix}kwargs.{key}: not allowed here ({RESERVED_KEYS[key]})")
        if key not in valid:
            import difflib

            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean '{prefix}kwargs.{close[0]}'?" if close else ""
            raise ConfigError(f"{prefix}kwargs.{key}: unknown {algo} argument{hint} (valid keys: {', '.join(valid)})")


def _action_noise(key: str, spec: Any, action_space: gym.Space | None) -> Any:
    """``{type: normal | ornstein_uhlenbeck, std: float}`` as an SB3 action noise (None: just validate)."""
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    kinds = {"normal": NormalActionNoise, "ornstein_uhlenbeck": OrnsteinUhlenbeckActionNoise}
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"type", "std"} or spec.get("type") not in kinds:
        raise ConfigError(
            f"{key}: {spec!r} is not allowed (allowed: null or {{type: normal | ornstein_uhlenbeck, std: <number>}})"
        )
    std = spec.get("std", 0.1)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        raise ConfigError(f"{key}.std: {std!r} is not a non-negative number")
    if action_space is None:
        return None
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"{key}: action noise needs a continuous (Box) action space, the env has {action_space}")
    shape = action_space.shape
    return kinds[spec["type"]](mean=np.zeros(shape), sigma=float(std) * np.ones(shape))


def algo_kwargs(cfg: "SB3Config", prefix: str = "agent.", action_space: gym.Space | None = None) -> dict[str, Any]:
    """``agent.kwargs`` converted for the SB3 constructor: schedules parsed, lists made tuples, noise built."""
    if cfg.algo not in ALGOS:
        raise ConfigError(f"{prefix}algo: {cfg.algo!r} is not allowed (allowed: {', '.join(ALGOS)})")
    _check_keys(cfg.algo, cfg.kwargs, prefix)
    out: dict[str, Any] = {}
    for key, value in cfg.kwargs.items():
        where = f"{prefix}kwargs.{key}"
        if key in SCHEDULE_KEYS and value is not None:
            out[key] = parse_schedule(where, value)
        elif key == "train_freq" and isinstance(value, list):
            out[key] = tuple(value)  # SB3 takes (n, "step" | "episode") as a tuple only
        elif key == "action_noise":
            out[key] = _action_noise(where, value, action_space)
        else:
            out[key] = value
    return out


def sb3_policy_kwargs(cfg: "SB3Config", prefix: str = "agent.") -> dict[str, Any]:
    """``agent.policy_kwargs`` with ``activation_fn`` and ``optimizer_class`` resolved from their names."""
    out = dict(cfg.policy_kwargs)
    if "activation_fn" in out:
        out["activation_fn"] = _named_class(
            f"{prefix}policy_kwargs.activation_fn", out["activation_fn"], _ACTIVATIONS, nn.Module, nn,
            ("nn.", "torch.nn.", "th.nn."),
        )
    if "optimizer_class" in out:
        from stable_baselines3.common import sb2_compat

        table = {**_OPTIMIZERS, "rmsproptflike": sb2_compat.rmsprop_tf_like.RMSpropTFLike}
        out["optimizer_class"] = _named_class(
            f"{prefix}policy_kwargs.optimizer_class", out["optimizer_class"], table, torch.optim.Optimizer,
            torch.optim, ("torch.optim.", "th.optim.", "optim."),
        )
    return out


@dataclass
class SB3Config:
    """Settings of ``agent.name: sb3``: a Stable-Baselines3 algorithm trained on the platform's envs."""

    name: str = setting("sb3", "Agent.", registry="agents")
    algo: Literal["PPO", "A2C", "DQN", "SAC", "TD3"] = setting("PPO", "Stable-Baselines3 algorithm.")
    policy: str = setting("MlpPolicy", "SB3 policy alias of the algorithm: MlpPolicy or CnnPolicy.")
    kwargs: dict = setting(
        {},
        "Hyperparameters passed to the SB3 constructor under RL-Zoo's names (n_steps, batch_size, ...); "
        "learning_rate, clip_range and clip_range_vf also take 'lin_<value>' linear schedules; "
        "action_noise takes {type: normal | ornstein_uhlenbeck, std: <number>}. "
        "The number of envs is env.num_envs and the budget run.total_steps.",
    )
    policy_kwargs: dict = setting(
        {}, "SB3 policy_kwargs (net_arch, ...); activation_fn and optimizer_class by name (tanh, relu, adam, ...)."
    )
    save_replay_buffer: bool = setting(
        False, "Off-policy algorithms: store the replay buffer in checkpoints so that a resume continues with it."
    )

    def validate(self, prefix: str = "agent.") -> None:
        """Check the policy, the kwargs keys and schedules and the policy_kwargs names; raise ConfigError."""
        cls = ALGOS[self.algo]
        aliases = sorted(getattr(cls, "policy_aliases", {}))
        if self.policy not in aliases:
            raise ConfigError(
                f"{prefix}policy: {self.policy!r} is not a {self.algo} policy (allowed: {', '.join(aliases)})"
            )
        algo_kwargs(self, prefix)
        sb3_policy_kwargs(self, prefix)


# ------------------------------------------------------------------------- env


class SB3VecEnv(SB3BaseVecEnv):
    """A platform ``VecEnv`` seen through Stable-Baselines3's ``VecEnv`` API (numpy in, numpy out).

    Discrete actions are exposed as ``Discrete(n)`` indices (the platform adds any
    ``start``); with an observation normaliser in the chain the observation space is
    ``Box(-clip, clip)``. ``last_step`` is the platform ``Step`` of the latest
    ``step_wait`` and ``env_seconds`` the wall time spent in ``step_wait`` so far.
    """

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        obs_space = env.observation_space
        normalizer = _find_wrapper(env, NormalizeObs)
        if normalizer is not None:
            obs_space = gym.spaces.Box(-normalizer.clip, normalizer.clip, tuple(obs_space.shape), np.float32)
        act_space = env.action_space
        if isinstance(act_space, gym.spaces.Discrete):
            act_space = gym.spaces.Discrete(int(act_space.n))
        self._discrete = isinstance(act_space, gym.spaces.Discrete)
        self._act_shape = tuple(act_space.shape or ())
        self._obs_dtype = np.dtype(obs_space.dtype)
        super().__init__(env.num_envs, obs_space, act_space)
        self._actions: np.ndarray | None = None
        self.last_step: Step | None = None
        self.env_seconds = 0.0
        self._start = time.time()

    # --------------------------------------------------------------- conversion
    def to_numpy_obs(self, obs: torch.Tensor) -> np.ndarray:
        """Platform observations ``[B, ...]`` as the numpy array SB3 expects (observation space dtype)."""
        arr = obs.detach().cpu().numpy()
        return arr if arr.dtype == self._obs_dtype else arr.astype(self._obs_dtype)

    def to_torch_action(self, actions: np.ndarray) -> torch.Tensor:
        """SB3 actions as the platform's int64 ``[B]`` indices or float32 ``[B, *shape]`` on the env's device."""
        arr = np.asarray(actions)
        if self._discrete:
            t = torch.from_numpy(arr.astype(np.int64, copy=False).reshape(self.num_envs))
        else:
            t = torch.from_numpy(arr.astype(np.float32, copy=False).reshape(self.num_envs, *self._act_shape))
        return t.to(self.env.device)

    # ----------------------------------------------------------------- VecEnv API
    def reset(self) -> np.ndarray:
        """Reset every env, seeding env i with ``seed + i`` when ``seed(seed)`` was called before."""
        if any(self._options):
            raise NotImplementedError("SB3VecEnv: reset options are not supported by the platform's envs")
        seed = self._seeds[0]
        obs = self.env.reset(seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self.last_step = None
        return self.to_numpy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for ``step_wait``."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the platform env; return ``(obs, rewards, dones, infos)`` in SB3's autoreset convention."""
        if self._actions is None:
            raise RuntimeError("SB3VecEnv.step_wait called without step_async")
        t0 = time.perf_counter()
        step = self.env.step(self.to_torch_action(self._actions))
        self._actions = None
        obs = self.to_numpy_obs(step.obs)
        rewards = step.reward.detach().cpu().numpy().astype(np.float32, copy=False)
        terminated = step.terminated.detach().cpu().numpy()
        truncated = step.truncated.detach().cpu().numpy()
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = self.to_numpy_obs(step.final_obs)
            episode = step.info.get("episode")
            if episode is not None:
                returns = episode["return"].detach().cpu().numpy()
                lengths = episode["length"].detach().cpu().numpy()
            elapsed = round(time.time() - self._start, 6)
            for i in np.flatnonzero(dones):
                info = infos[i]
                info["terminal_observation"] = np.array(final[i])
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if episode is not None:
                    info["episode"] = {"r": float(returns[i]), "l": int(lengths[i]), "t": elapsed}
        self.last_step = step
        self.env_seconds += time.perf_counter() - t0
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Close the platform env."""
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Only ``render_mode`` (None): the platform's envs are batched, not a list of gym envs."""
        n = len(list(self._get_indices(indices)))
        if attr_name == "render_mode":
            return [None] * n
        raise AttributeError(
            f"SB3VecEnv: per-env attribute {attr_name!r} is not available (the platform env is batched)"
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: the platform's envs are batched."""
        raise NotImplementedError(
            f"SB3VecEnv: cannot set per-env attribute {attr_name!r} (the platform env is batched)"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Not supported: the platform's envs are batched."""
        raise NotImplementedError(
            f"SB3VecEnv: cannot call per-env method {method_name!r} (the platform env is batched)"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """False for every env: no gym wrappers (episode statistics come from the platform)."""
        return [False] * len(list(self._get_indices(indices)))

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        """Only empty options: the platform's reset takes none."""
        if options:
            raise NotImplementedError("SB3VecEnv: reset options are not supported by the platform's envs")

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Not supported: the platform's envs do not render."""
        raise NotImplementedError("SB3VecEnv: rendering is not supported")

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Not supported: the platform's envs do not render."""
        raise NotImplementedError("SB3VecEnv: rendering is not supported")


def _find_wrapper(env: VecEnv, cls: type) -> Any:
    while True:
        if isinstance(env, cls):
            return env
        if not isinstance(env, VecEnvWrapper):
            return None
        env = env.env


# ----------------------------------------------------------------------- agent


class SB3Agent(Agent):
    """The SB3 policy as a platform ``Agent``: ``policy.predict`` (action scaling and clipping included)."""

    def __init__(self, model: BaseAlgorithm, vec_env: SB3VecEnv) -> None:
        super().__init__()
        self.policy = model.policy
        self._vec_env = vec_env

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Memoryless: ``()``."""
        return ()

    def act(
        self, obs: torch.Tensor, state: State, is_first: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """Actions of the SB3 policy for observations ``[B, ...]``, on ``obs.device``."""
        actions, _ = self.policy.predict(self._vec_env.to_numpy_obs(obs), deterministic=deterministic)
        actions = np.asarray(actions)
        if isinstance(self.policy.action_space, gym.spaces.Discrete):
            out = torch.from_numpy(actions.astype(np.int64, copy=False).reshape(obs.shape[0]))
        else:
            out = torch.from_numpy(actions.astype(np.float32, copy=False))
        return out.to(obs.device), (), {}


# --------------------------------------------------------------------- trainer


class _RunCallback(BaseCallback):
    """Keeps the run in step with SB3: step count, episodes, timers, ``run.tick`` and stopping."""

    def __init__(self, trainer: "SB3Trainer") -> None:
        super().__init__(verbose=0)
        self.trainer = trainer
        self._rollout_start = 0.0
        self._env_at_start = 0.0
        self._rollout_end: float | None = None

    def _record_learn_time(self) -> None:
        if self._rollout_end is not None:
            self.trainer.run.logger.add_time("learn", time.perf_counter() - self._rollout_end)
            self._rollout_end = None

    def _on_rollout_start(self) -> None:
        self._record_learn_time()
        self.trainer.tick()
        self._rollout_start = time.perf_counter()
        self._env_at_start = self.trainer.vec_env.env_seconds

    def _on_step(self) -> bool:
        trainer = self.trainer
        if trainer.stopped:
            return False  # the env step just taken is discarded; train() rewinds num_timesteps
        trainer.run.step = int(self.model.num_timesteps)
        step = trainer.vec_env.last_step
        if step is not None:
            trainer.run.logger.episodes(step.info.get("episode"))
        return True

    def _on_rollout_end(self) -> None:
        now = time.perf_counter()
        env_time = self.trainer.vec_env.env_seconds - self._env_at_start
        log = self.trainer.run.logger
        log.add_time("env", env_time)
        log.add_time("inference", max(0.0, now - self._rollout_start - env_time))
        self._rollout_end = now

    def _on_training_end(self) -> None:
        self._record_learn_time()


class SB3Trainer(Trainer):
    """Trains a Stable-Baselines3 model on the platform's env, under the platform's run loop and checkpoints."""

    def __init__(self, cfg: Config, run: Any) -> None:
        super().__init__(cfg, run)
        self.hp: SB3Config = cfg.agent
        self.hp.validate("agent.")
        self.env = make_env(cfg.env, seed=run.env_seed, device="cpu")
        try:
            self.vec_env = SB3VecEnv(self.env)
            self.model = self._build_model()
        except BaseException:
            self.env.close()
            raise
        # SB3 seeds the env with run.seed; a resumed run must start fresh episodes from its own env seed.
        self.vec_env.seed(run.env_seed)
        self.agent = SB3Agent(self.model, self.vec_env)
        self.stopped = False
        self._ticked_step = int(run.step)
        self._metrics: dict[str, float] = {}
        self._warned_buffer = False

    def _build_model(self) -> BaseAlgorithm:
        from lifelong.run import rng_state, set_rng_state

        hp, cfg = self.hp, self.cfg
        cls = ALGOS[hp.algo]
        kwargs = algo_kwargs(hp, "agent.", self.vec_env.action_space)
        policy_kwargs = sb3_policy_kwargs(hp, "agent.")
        resumed = getattr(self.run, "resumed_from", None) is not None
        saved_rng = rng_state() if resumed else None
        try:
            model = cls(
                hp.policy, self.vec_env, device=self.run.device, seed=cfg.run.seed, verbose=0,
                policy_kwargs=policy_kwargs or None, **kwargs,
            )
        except (AssertionError, ValueError, TypeError) as e:
            message = " ".join(str(e).split()) or type(e).__name__
            raise ConfigError(
                f"agent.algo: SB3 {hp.algo} cannot be built on {cfg.env.id!r} with these settings ({message})"
            ) from e
        finally:
            # SB3 re-seeds the global RNGs with run.seed; a resume keeps the streams the run restored.
            if saved_rng is not None:
                set_rng_state(saved_rng)
        return model

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        """Run ``model.learn`` for the rest of the budget; the callback ticks the run after every update."""
        run, model = self.run, self.model
        if not run.done:
            # learn(reset_num_timesteps=False) sets _total_timesteps = remaining + num_timesteps; with
            # num_timesteps == run.step that is run.total_steps, so schedules continue across resumes.
            model.num_timesteps = int(run.step)
            remaining = self.cfg.run.total_steps - run.step
            model.learn(total_timesteps=remaining, callback=_RunCallback(self), reset_num_timesteps=False,
                        progress_bar=False)
        model.num_timesteps = int(run.step)  # drop the step taken after a stop was requested
        if run.step > self._ticked_step:
            self.tick()

    def tick(self) -> None:
        """Call ``run.tick`` with SB3's latest training scalars if steps were taken since the last call."""
        run = self.run
        if self.stopped or run.step <= self._ticked_step:
            return
        self._ticked_step = run.step
        if run.tick(self, self._collect_metrics()):
            self.stopped = True

    def _collect_metrics(self) -> dict[str, float]:
        logger = getattr(self.model, "_logger", None)
        values = getattr(logger, "name_to_value", None) or {}
        for key, value in values.items():
            name = metric_name(key)
            if name is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number) and name.endswith("explained_variance"):
                continue  # NaN when the returns have zero variance; not a divergence
            self._metrics[name] = number
        return dict(self._metrics)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Policy and optimizer state dicts, SB3's counters, env normalisers and optionally the replay buffer."""
        model = self.model
        module_names, tensor_names = model._get_torch_save_params()
        state: dict[str, Any] = {
            "algo": self.hp.algo,
            "modules": {name: recursive_getattr(model, name).state_dict() for name in module_names},
            "tensors": {name: recursive_getattr(model, name).detach().clone() for name in tensor_names},
            "num_timesteps": int(model.num_timesteps),
            "counters": {name: int(getattr(model, name)) for name in _COUNTERS if hasattr(model, name)},
            "env": self.env.state_dict(),
        }
        if hasattr(model, "exploration_rate"):
            state["exploration_rate"] = float(model.exploration_rate)
        if self.hp.save_replay_buffer and isinstance(model, OffPolicyAlgorithm):
            state["replay_buffer"] = buffer = replay_buffer_state(model.replay_buffer)
            mb = sum(t.numel() * t.element_size() for t in buffer["arrays"].values()) / 1e6
            self._write(f"sb3: replay buffer ({buffer['size']} rows per env, {mb:.1f} MB) saved in the checkpoint")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything ``state_dict`` saved; without a saved replay buffer, warm up again before learning."""
        model = self.model
        if state.get("algo") != self.hp.algo:
            raise ValueError(
                f"agent.algo: the checkpoint holds an SB3 {state.get('algo')!r} model, "
                f"the config asks for {self.hp.algo!r}"
            )
        for name, sd in state["modules"].items():
            recursive_getattr(model, name).load_state_dict(sd)
        for name, tensor in state["tensors"].items():
            with torch.no_grad():
                recursive_getattr(model, name).copy_(tensor)
        model.num_timesteps = int(state["num_timesteps"])
        for name, value in state.get("counters", {}).items():
            setattr(model, name, int(value))
        if "exploration_rate" in state:
            model.exploration_rate = float(state["exploration_rate"])
        self.env.load_state_dict(state["env"])
        if isinstance(model, OffPolicyAlgorithm):
            if "replay_buffer" in state:
                load_replay_buffer_state(model.replay_buffer, state["replay_buffer"])
            elif model.num_timesteps > 0:
                # An empty buffer would be sampled right away; refill it first, as at the start of a run.
                warmup = max(int(model.learning_starts), int(model.batch_size))
                model.learning_starts = model.num_timesteps + warmup
                self._write(f"sb3: no replay buffer in the checkpoint; collecting {warmup} steps before learning "
                            "again (set agent.save_replay_buffer=true to keep it)")

    def env_state(self) -> dict[str, Any]:
        """Normaliser statistics for evaluation."""
        return self.env.state_dict()

    def _write(self, message: str) -> None:
        logger = getattr(self.run, "logger", None)
        if logger is not None:
            logger.write(message)


def metric_name(sb3_key: str) -> str | None:
    """The platform's scalar name for an SB3 logger key (``train/x`` -> ``losses/x``), or None to skip it."""
    if sb3_key == "train/learning_rate":
        return "charts/learning_rate"
    if sb3_key == "rollout/exploration_rate":
        return "charts/exploration_rate"
    if sb3_key.startswith("train/"):
        return "losses/" + sb3_key[len("train/"):]
    return None  # rollout/ and time/ statistics come from the platform's own tracker and timers


def replay_buffer_state(buffer: Any) -> dict[str, Any]:
    """The filled rows of an SB3 replay buffer's arrays as tensors, with ``pos``, ``full`` and sizes."""
    size = int(buffer.buffer_size) if buffer.full else int(buffer.pos)
    arrays = {}
    for name in _BUFFER_ARRAYS:
        arr = getattr(buffer, name, None)
        if isinstance(arr, np.ndarray):
            arrays[name] = torch.from_numpy(arr[:size].copy())  # a copy, so only these rows are saved
    return {"arrays": arrays, "pos": int(buffer.pos), "full": bool(buffer.full), "size": size,
            "buffer_size": int(buffer.buffer_size), "n_envs": int(buffer.n_envs)}


def load_replay_buffer_state(buffer: Any, state: dict[str, Any]) -> None:
    """Write what ``replay_buffer_state`` returned back into ``buffer`` (same buffer_size and env count)."""
    if int(state["n_envs"]) != int(buffer.n_envs) or int(state["buffer_size"]) != int(buffer.buffer_size):
        raise ValueError(
            f"agent.kwargs.buffer_size: the checkpoint's replay buffer has {state['buffer_size']} rows x "
            f"{state['n_envs']} envs, this config's has {buffer.buffer_size} x {buffer.n_envs}; "
            "resume with the same buffer_size and env.num_envs"
        )
    size = int(state["size"])
    for name, tensor in state["arrays"].items():
        arr = getattr(buffer, name, None)
        if not isinstance(arr, np.ndarray):
            continue
        data = tensor.detach().cpu().numpy()
        if data.shape[1:] != arr.shape[1:]:
            raise ValueError(
                f"replay buffer {name!r}: checkpoint rows have shape {data.shape[1:]}, this env needs {arr.shape[1:]}"
            )
        arr[:size] = data
    buffer.pos = int(state["pos"])
    buffer.full = bool(state["full"])


@AGENTS.register("sb3", config=SB3Config, summary="Stable-Baselines3 PPO, A2C, DQN, SAC, TD3 on the platform's envs.")
def make_sb3(cfg: Config, run: Any) -> SB3Trainer:
    """Build the Stable-Baselines3 trainer."""
    return SB3Trainer(cfg, run)
