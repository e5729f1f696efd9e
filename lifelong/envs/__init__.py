"""Batched environments: ``make_env(cfg)`` gives a same-step-autoreset ``VecEnv`` whatever the backend."""

from __future__ import annotations

import torch

from lifelong.config import EnvConfig
from lifelong.envs.base import Step, VecEnv
from lifelong.envs.check import check_env
from lifelong.envs.wrappers import EpisodeStats, NormalizeObs, ScaleReward, VecEnvWrapper
from lifelong.registry import ENV_BACKENDS

__all__ = ["Step", "VecEnv", "VecEnvWrapper", "EpisodeStats", "NormalizeObs", "ScaleReward", "make_env", "check_env"]


def make_env(
    cfg: EnvConfig,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    num_envs: int | None = None,
    training: bool = True,
) -> VecEnv:
    """Build the backend named by ``cfg.backend``, then EpisodeStats and the normalisers ``cfg`` asks for.

    ``training=False`` (evaluation envs) freezes the observation normaliser (load the
    training env's ``state_dict`` into it) and leaves rewards unscaled.
    """
    entry = ENV_BACKENDS.get(cfg.backend, key="env.backend")
    device = torch.device(device)
    count = cfg.num_envs if num_envs is None else num_envs
    env: VecEnv = entry.factory(cfg, num_envs=count, seed=seed, device=device)
    env = EpisodeStats(env)
    if cfg.normalize_obs:
        env = NormalizeObs(env, clip=cfg.clip_obs, training=training)
    if cfg.normalize_reward and training:
        env = ScaleReward(env, gamma=cfg.gamma, clip=cfg.clip_reward, training=training)
    return env
