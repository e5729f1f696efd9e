"""Evaluation of a policy on fresh environments: mean and std of the episode return."""

from __future__ import annotations

from typing import Any

import torch

from lifelong.config import Config
from lifelong.envs import VecEnv, make_env

EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never share seeds with training episodes


@torch.inference_mode()
def evaluate_policy(
    agent: Any,
    cfg: Config,
    *,
    episodes: int,
    device: torch.device,
    env_state: dict[str, Any] | None = None,
    deterministic: bool = True,
    env: VecEnv | None = None,
    seed: int | None = None,
) -> tuple[dict[str, Any], VecEnv]:
    """Run ``episodes`` episodes; return ``({mean, std, episodes, returns, lengths}, env)``.

    Each of the B envs runs a fixed quota of episodes (counted in completion order),
    so short episodes are not over-represented. Every evaluation uses the same seed,
    so successive evaluations of a run face the same test episodes.
    """
    if env is None:
        env = make_env(cfg.env, seed=cfg.run.seed + EVAL_SEED_OFFSET, device=device,
                       num_envs=min(cfg.run.eval_num_envs, episodes), training=False)
    if env_state:
        env.load_state_dict(env_state)
    num = env.num_envs
    quota = torch.full((num,), episodes // num, dtype=torch.long)
    quota[: episodes % num] += 1
    quota = quota.to(device)
    count = torch.zeros(num, dtype=torch.long, device=device)
    returns: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    obs = env.reset(seed=(cfg.run.seed if seed is None else seed) + EVAL_SEED_OFFSET)
    is_first = torch.ones(num, dtype=torch.bool, device=device)
    state = agent.initial_state(num, device)
    while bool((count < quota).any()):
        action, state, _ = agent.act(obs, state, is_first, deterministic=deterministic)
        step = env.step(action)
        ep = step.info["episode"]
        take = ep["done"] & (count < quota)
        if bool(take.any()):
            returns.append(ep["return"][take].float())
            lengths.append(ep["length"][take].float())
            count += take.long()
        obs, is_first = step.obs, step.is_first
    r = torch.cat(returns).cpu()
    lens = torch.cat(lengths).cpu()
    result = {
        "mean": float(r.mean()),
        "std": float(r.std(unbiased=False)) if r.numel() > 1 else 0.0,
        "episodes": int(r.numel()),
        "returns": r.tolist(),
        "lengths": lens.tolist(),
    }
    return result, env
