"""lifelong PPO against Stable-Baselines3 PPO on CartPole-v1: time to solve and training SPS.

One invocation runs every contender, each in a fresh subprocess (so each pays its
own imports: "from process start" is from the moment its process is spawned),
alternating contenders seed by seed so machine noise hits both alike. Both use
RL-Zoo's tuned CartPole-v1 PPO hyperparameters (8 envs, n_steps 32, batch 256,
20 epochs, gamma 0.98, GAE lambda 0.8, lr 1e-3 and clip 0.2 annealed) and the same
evaluation protocol: every 2,048 env steps, 20 deterministic episodes on 20 envs,
stopping at the first mean return >= 475. Both train with one torch thread (the
lifelong preset's setting; faster for small networks); `sb3_default` is SB3 as
shipped, with torch's default thread count, for context.

Printed per contender and seed: seconds from process start to solved, env steps
then, training SPS (env steps per second of training, evaluation time excluded),
and the median ratios SB3 / lifelong.

    python benchmarks/ppo_cartpole.py [--seeds 3] [--budget 100000]
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

EVAL_EVERY = 2048
EVAL_EPISODES = 20
THRESHOLD = 475.0


def run_lifelong(seed: int, budget: int) -> dict:
    """Train lifelong PPO (EnvPool) until solved; return figures measured inside the process."""
    from lifelong.config import load_config
    from lifelong.run import train

    cfg = load_config(
        "configs/ppo_cartpole.yaml",
        [f"run.seed={seed}", f"run.total_steps={budget}", f"run.eval_every={EVAL_EVERY}",
         f"run.eval_episodes={EVAL_EPISODES}", "run.eval_num_envs=20", f"run.stop_return={THRESHOLD}",
         "run.checkpoint_every=0", "run.progress=false"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, f"{tmp}/run")
    solved = next((e for e in results["evals"] if e["mean"] >= THRESHOLD), None)
    train_time = results["wall_time_s"] - results["eval_time_s"] - results["setup_time_s"]
    return {
        "solved_at": time.time() if solved else None,
        "steps": solved["step"] if solved else None,
        "train_sps": results["steps"] / train_time,
        "total_steps": results["steps"],
    }


def run_sb3(seed: int, budget: int, one_thread: bool = True) -> dict:
    """Train SB3 PPO (Gymnasium CartPole-v1, DummyVecEnv) with RL-Zoo hyperparameters until solved."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    if one_thread:
        torch.set_num_threads(1)  # the same thread setting as the lifelong preset

    def linear(start: float):
        return lambda progress: progress * start

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=EVAL_EPISODES, seed=seed + 1_000_003)

    class TimedEval(EvalCallback):
        eval_seconds = 0.0

        def _on_step(self) -> bool:
            start = time.perf_counter()
            out = super()._on_step()
            self.eval_seconds += time.perf_counter() - start
            return out

    stop = StopTrainingOnRewardThreshold(reward_threshold=THRESHOLD, verbose=0)
    callback = TimedEval(eval_env, callback_on_new_best=stop, n_eval_episodes=EVAL_EPISODES,
                         eval_freq=EVAL_EVERY // 8, deterministic=True, verbose=0)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, verbose=0,
                device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=callback)
    learn_time = time.perf_counter() - start
    solved = callback.best_mean_reward >= THRESHOLD
    return {
        "solved_at": time.time() if solved else None,
        "steps": model.num_timesteps if solved else None,
        "train_sps": model.num_timesteps / (learn_time - callback.eval_seconds),
        "total_steps": model.num_timesteps,
    }


WORKERS = {"lifelong": run_lifelong, "sb3": run_sb3,
           "sb3_default": lambda seed, budget: run_sb3(seed, budget, one_thread=False)}


def main() -> None:
    """Run both contenders for every seed and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.seed, args.budget)))
        return

    rows: dict[str, list[dict]] = {name: [] for name in WORKERS}
    print(f"{'contender':<10} {'seed':>4} {'s to 475':>9} {'steps':>8} {'train SPS':>10}")
    for seed in range(args.seeds):
        order = list(WORKERS)
        for name in order[seed % len(order):] + order[: seed % len(order)]:
            row = spawn(__file__, name, seed, "--budget", str(args.budget))
            rows[name].append(row)
            secs = f"{row['seconds_to_solve']:.1f}" if row["seconds_to_solve"] else "unsolved"
            print(f"{name:<10} {seed:>4} {secs:>9} {row['steps'] or '-':>8} {row['train_sps']:>10,.0f}", flush=True)

    print()
    print("medians; ratio = how many times better lifelong is")
    for peer_name in ("sb3", "sb3_default"):
        for key, label in (("seconds_to_solve", "seconds to 475"), ("steps", "env steps to 475"),
                           ("train_sps", "training SPS")):
            ours, peer = median(rows["lifelong"], key), median(rows[peer_name], key)
            if ours is None or peer is None:
                print(f"{label:<18} lifelong {ours}  {peer_name} {peer}")
                continue
            ratio = ours / peer if key == "train_sps" else peer / ours
            print(f"{label:<18} lifelong {ours:>10,.1f}  {peer_name:<11} {peer:>10,.1f}  ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
