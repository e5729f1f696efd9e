"""Training throughput of lifelong PPO (EnvPool) against Stable-Baselines3 PPO on HalfCheetah-v4.

Both train 50,000 env steps with the same hyperparameters: RL-Zoo's HalfCheetah PPO
(batch 64, 20 epochs, gamma 0.98, GAE lambda 0.92, clip 0.1, lr 2.0633e-5, ent 4.0e-4,
vf 0.58, grad clip 0.8, ReLU 256-256 actor and critic, log-std init -2, no orthogonal
init, observations and rewards normalised), with the rollout of 512 steps spread over
8 envs (n_steps 64) so that vectorised stepping is exercised. lifelong steps EnvPool's
HalfCheetah-v4; SB3 steps Gymnasium's in a DummyVecEnv under VecNormalize, as usual.
Each contender runs in a fresh process, alternating per seed; SPS counts training
time only (setup and evaluation excluded).

    python benchmarks/ppo_halfcheetah_sps.py [--seeds 2] [--steps 50000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, spawn  # noqa: E402

HP = dict(n_steps=64, batch_size=64, n_epochs=20, gamma=0.98, gae_lambda=0.92, clip_range=0.1,
          learning_rate=2.0633e-5, ent_coef=0.000401762, vf_coef=0.58096, max_grad_norm=0.8)


def run_lifelong(seed: int, steps: int) -> dict:
    """lifelong PPO on EnvPool HalfCheetah-v4 with 8 envs."""
    from lifelong.config import load_config
    from lifelong.run import train

    cfg = load_config(
        "configs/ppo_halfcheetah.yaml",
        [f"run.seed={seed}", f"run.total_steps={steps}", "run.eval_every=0", "run.eval_episodes=1",
         "run.eval_num_envs=1", "run.checkpoint_every=0", "run.progress=false", "env.num_envs=8",
         f"agent.num_steps={HP['n_steps']}", f"agent.minibatch_size={HP['batch_size']}",
         f"agent.epochs={HP['n_epochs']}", f"agent.gamma={HP['gamma']}", f"agent.gae_lambda={HP['gae_lambda']}",
         f"agent.clip_coef={HP['clip_range']}", f"agent.lr={HP['learning_rate']}", "agent.anneal_lr=false",
         f"agent.ent_coef={HP['ent_coef']}", f"agent.vf_coef={HP['vf_coef']}",
         f"agent.max_grad_norm={HP['max_grad_norm']}", "agent.log_std_init=-2", "agent.ortho_init=false",
         "agent.memory.hidden=[256,256]", "agent.memory.activation=relu"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, f"{tmp}/run")
    train_time = results["wall_time_s"] - results["eval_time_s"] - results["setup_time_s"]
    return {"steps": results["steps"], "train_sps": results["steps"] / train_time}


def run_sb3(seed: int, steps: int) -> dict:
    """SB3 PPO on Gymnasium HalfCheetah-v4 (DummyVecEnv + VecNormalize) with 8 envs."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)  # the same thread setting as the lifelong preset
    env = VecNormalize(make_vec_env("HalfCheetah-v4", n_envs=8, seed=seed), gamma=HP["gamma"])
    model = PPO("MlpPolicy", env, seed=seed, verbose=0, device="cpu",
                policy_kwargs=dict(log_std_init=-2, ortho_init=False, activation_fn=torch.nn.ReLU,
                                   net_arch=dict(pi=[256, 256], vf=[256, 256])), **HP)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return {"steps": model.num_timesteps, "train_sps": model.num_timesteps / (time.perf_counter() - start)}


WORKERS = {"lifelong": run_lifelong, "sb3": run_sb3}


def main() -> None:
    """Run both contenders per seed; print SPS and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.seed, args.steps)))
        return
    rows: dict[str, list[dict]] = {name: [] for name in WORKERS}
    print(f"{'contender':<10} {'seed':>4} {'steps':>8} {'train SPS':>10}")
    for seed in range(args.seeds):
        for name in ("sb3", "lifelong") if seed % 2 else ("lifelong", "sb3"):
            row = spawn(__file__, name, seed, "--steps", str(args.steps))
            rows[name].append(row)
            print(f"{name:<10} {seed:>4} {row['steps']:>8} {row['train_sps']:>10,.0f}", flush=True)
    ours, peer = median(rows["lifelong"], "train_sps"), median(rows["sb3"], "train_sps")
    print(f"\ntraining SPS  lifelong {ours:,.0f}  sb3 {peer:,.0f}  ratio {ours / peer:.2f}x")


if __name__ == "__main__":
    main()
