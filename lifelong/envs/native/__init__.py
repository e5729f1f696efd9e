"""The ``native`` env backend: torch-batched envs on ``run.device`` (POPGym tasks, CartPole, Pendulum).

``env.id`` names a task in ``TASKS``; POPGym's Easy/Medium/Hard ids carry their settings
and the bare family ids (``RepeatPrevious``, ...) take them from ``env.kwargs``
(``env.kwargs`` also overrides a preset's values). Every task accepts ``prev_action``
(append the previous action to the observation) and ``env.max_episode_steps``
(truncate episodes earlier or later than the task does; reward scales stay the task's).
Parameterized tasks (``ParamCartPole``, ``ParamRepeatPrevious``, ``GatedCorridor``) also
accept ``params``: every env's parameter vector until ``set_params`` replaces it.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch

from lifelong.config import ConfigError, EnvConfig
from lifelong.envs.base import VecEnv
from lifelong.envs.native.base import NativeVecEnv, draw_cards, one_hot
from lifelong.envs.native.control import (
    CartPole,
    NoisyPositionOnlyCartPole,
    NoisyPositionOnlyPendulum,
    Pendulum,
    PositionOnlyCartPole,
    PositionOnlyPendulum,
    VelocityOnlyCartPole,
)
from lifelong.envs.native.cue_recall import CueRecall
from lifelong.envs.native.games import Battleship, Concentration, HigherLower, MineSweeper, MultiarmedBandit
from lifelong.envs.native.memory_tasks import Autoencode, CountRecall, RepeatFirst, RepeatPrevious
from lifelong.envs.native.parameterized import GatedCorridor, ParamCartPole, ParamRepeatPrevious
from lifelong.registry import ENV_BACKENDS

__all__ = [
    "TASKS",
    "NativeVecEnv",
    "make_native",
    "make_task",
    "build_task",
    "draw_cards",
    "one_hot",
    "RepeatPrevious",
    "RepeatFirst",
    "CountRecall",
    "Autoencode",
    "CartPole",
    "PositionOnlyCartPole",
    "VelocityOnlyCartPole",
    "NoisyPositionOnlyCartPole",
    "Pendulum",
    "PositionOnlyPendulum",
    "NoisyPositionOnlyPendulum",
    "MultiarmedBandit",
    "HigherLower",
    "MineSweeper",
    "Battleship",
    "Concentration",
    "CueRecall",
    "ParamCartPole",
    "ParamRepeatPrevious",
    "GatedCorridor",
]


def _levels(family: str, cls: type[NativeVecEnv], easy: dict, medium: dict, hard: dict) -> dict:
    return {
        family: (cls, {}),
        f"{family}Easy": (cls, easy),
        f"{family}Medium": (cls, medium),
        f"{family}Hard": (cls, hard),
    }


# task id -> (class, preset keyword arguments); POPGym's settings for Easy/Medium/Hard
TASKS: dict[str, tuple[type[NativeVecEnv], dict[str, Any]]] = {
    **_levels("RepeatPrevious", RepeatPrevious, {"num_decks": 1, "k": 4}, {"num_decks": 2, "k": 32},
              {"num_decks": 3, "k": 64}),
    **_levels("RepeatFirst", RepeatFirst, {"num_decks": 1}, {"num_decks": 8}, {"num_decks": 16}),
    **_levels("CountRecall", CountRecall, {"num_decks": 1, "deck_type": "colors"},
              {"num_decks": 2, "deck_type": "suits"}, {"num_decks": 4, "deck_type": "ranks"}),
    **_levels("Autoencode", Autoencode, {"num_decks": 1}, {"num_decks": 2}, {"num_decks": 3}),
    **_levels("PositionOnlyCartPole", PositionOnlyCartPole, {"max_episode_length": 200},
              {"max_episode_length": 400}, {"max_episode_length": 600}),
    **_levels("VelocityOnlyCartPole", VelocityOnlyCartPole, {"max_episode_length": 200},
              {"max_episode_length": 400}, {"max_episode_length": 600}),
    **_levels("NoisyPositionOnlyCartPole", NoisyPositionOnlyCartPole, {"noise_sigma": 0.1},
              {"noise_sigma": 0.2}, {"noise_sigma": 0.3}),
    **_levels("PositionOnlyPendulum", PositionOnlyPendulum, {"max_episode_length": 200},
              {"max_episode_length": 150}, {"max_episode_length": 100}),
    **_levels("NoisyPositionOnlyPendulum", NoisyPositionOnlyPendulum, {"noise_sigma": 0.1},
              {"noise_sigma": 0.2}, {"noise_sigma": 0.3}),
    **_levels("MultiarmedBandit", MultiarmedBandit, {"num_bandits": 10, "episode_length": 200},
              {"num_bandits": 20, "episode_length": 400}, {"num_bandits": 30, "episode_length": 600}),
    **_levels("HigherLower", HigherLower, {"num_decks": 1}, {"num_decks": 2}, {"num_decks": 3}),
    **_levels("MineSweeper", MineSweeper, {"difficulty": "easy"}, {"difficulty": "medium"},
              {"difficulty": "hard"}),
    **_levels("Battleship", Battleship, {"board_size": 8}, {"board_size": 10}, {"board_size": 12}),
    **_levels("Concentration", Concentration, {"num_decks": 1, "deck_type": "colors"},
              {"num_decks": 2, "deck_type": "colors"}, {"num_decks": 1, "deck_type": "ranks"}),
    "CartPole": (CartPole, {}),
    "Pendulum": (Pendulum, {}),
    **_levels("CueRecall", CueRecall, {"symbols": 4, "gap": 32}, {"symbols": 8, "gap": 128},
              {"symbols": 16, "gap": 512}),
    "ParamCartPole": (ParamCartPole, {}),
    "ParamRepeatPrevious": (ParamRepeatPrevious, {}),
    "GatedCorridor": (GatedCorridor, {}),
}

_COMMON = ("prev_action",)
_RESERVED = ("num_envs", "seed", "device", "time_limit")


def task_keywords(cls: type[NativeVecEnv]) -> list[str]:
    """The keyword arguments task class ``cls`` accepts from ``env.kwargs``."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is NativeVecEnv or not issubclass(klass, NativeVecEnv):
            break
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in names:
                names.append(p.name)
    common = _COMMON + (("params",) if cls.param_space is not None else ())
    return names + [n for n in common if n not in names]


def make_task(task_id: str, num_envs: int, *, seed: int = 0, device: str | torch.device = "cpu",
              time_limit: int | None = None, **kwargs: Any) -> NativeVecEnv:
    """Build native task ``task_id`` (a key of ``TASKS``) with ``kwargs`` over its preset; ConfigError if invalid."""
    return build_task(task_id, num_envs, kwargs, seed=seed, device=device, time_limit=time_limit)


def build_task(task_id: str, num_envs: int, kwargs: dict[str, Any], *, seed: int, device: str | torch.device,
               time_limit: int | None) -> NativeVecEnv:
    """``make_task`` with the task's keyword arguments as one dict (``env.kwargs``)."""
    if task_id not in TASKS:
        close = difflib.get_close_matches(task_id, list(TASKS), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"env.id: {task_id!r} is not a native task{hint} (native tasks: {', '.join(TASKS)})"
        )
    cls, preset = TASKS[task_id]
    reserved = sorted(set(kwargs) & set(_RESERVED))
    if reserved:
        raise ConfigError(
            f"env.kwargs: {', '.join(reserved)} cannot be set here (seed comes from run.seed, num_envs from "
            f"env.num_envs, device from run.device, time_limit from env.max_episode_steps)"
        )
    allowed = task_keywords(cls)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"env.kwargs: native task {task_id!r} does not accept {', '.join(unknown)} "
            f"(accepted: {', '.join(allowed)})"
        )
    try:
        return cls(num_envs, seed=seed, device=device, time_limit=time_limit, **{**preset, **kwargs})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.kwargs: native task {task_id!r}: {e}") from e


@ENV_BACKENDS.register(
    "native",
    summary="Torch-batched envs on run.device: POPGym memory tasks and games, CartPole, Pendulum, CueRecall, "
    "parameterized tasks for curricula.",
)
def make_native(cfg: EnvConfig, *, num_envs: int, seed: int, device: torch.device) -> VecEnv:
    """Build the native task named by ``cfg.id`` with ``cfg.kwargs``."""
    return build_task(cfg.id, num_envs, dict(cfg.kwargs), seed=seed, device=device, time_limit=cfg.max_episode_steps)
