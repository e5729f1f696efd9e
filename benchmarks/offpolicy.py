"""lifelong's SAC, TD3 and DQN against Stable-Baselines3's, with RL-Zoo hyperparameters on both sides.

One invocation runs every contender of an experiment, each in a fresh subprocess
(so "from process start" includes its imports), alternating the order seed by seed
so machine noise hits both alike. Both sides use one torch thread and the same
evaluation protocol (deterministic policy, a separate vectorised eval env).

Experiments:

* ``pendulum``: SAC on Pendulum-v1 (RL-Zoo: lr 1e-3, otherwise SB3's SAC defaults:
  256x256 ReLU, batch 256, tau 0.005, 100 random steps, one update per step, auto
  temperature). Evaluation every 1,000 steps on 10 episodes; stop at mean >= -200.
  Reports env steps and seconds from process start to -200.
* ``cartpole``: DQN on CartPole-v1 (RL-Zoo's tuned DQN: lr 2.3e-3, batch 64, buffer
  100k, 1,000 random steps, 128 updates every 256 steps, target copy every 10 steps,
  epsilon to 0.04 over 16% of 50k steps, 256x256 ReLU). lifelong adds double-Q
  targets (its default). Evaluation every 2,000 steps on 20 episodes; stop at 475.
* ``halfcheetah``: SAC and TD3 on HalfCheetah-v4 for ``--budget`` env steps (RL-Zoo's
  MuJoCo settings: 10k random steps; SAC lr 3e-4, 256x256; TD3 lr 1e-3, 400x300,
  Gaussian noise 0.1). lifelong steps EnvPool's HalfCheetah-v4, SB3 Gymnasium's
  (both MuJoCo). Reports the evaluation return (10 episodes) at the budget, the
  seconds of training (evaluation excluded) and training SPS.

    python benchmarks/offpolicy.py pendulum [--seeds 3]
    python benchmarks/offpolicy.py cartpole [--seeds 3]
    python benchmarks/offpolicy.py halfcheetah [--seeds 1] [--budget 100000]

``--contenders lifelong_td3,sb3_td3`` runs a subset, ``--first-seed`` shifts the seeds and
``--jobs 2`` runs two contenders at a time (a lifelong/SB3 pair of one seed side by side,
which suits returns; for speed ratios keep the default of one). The summary of final
returns gives each side's mean and min..max, the Mann-Whitney U of the peer's returns
over lifelong's with its one-sided permutation p, and the verdict of "within the peer's
seed spread or above": lifelong's mean at least the peer's lowest seed and p >= 0.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, rank_test, spawn_rotated  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PENDULUM = {"threshold": -200.0, "eval_every": 1000, "episodes": 10, "budget": 20000}
CARTPOLE = {"threshold": 475.0, "eval_every": 2000, "episodes": 20, "budget": 50000}


def _lifelong(config: str, overrides: list[str], threshold: float | None) -> dict:
    """Train a lifelong preset with overrides; figures measured inside the process."""
    from lifelong.config import load_config
    from lifelong.run import train

    cfg = load_config(ROOT / config, [*overrides, "run.checkpoint_every=0", "run.progress=false",
                                      "run.torch_threads=1"])
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, f"{tmp}/run")
    solved = next((e for e in results["evals"] if threshold is not None and e["mean"] >= threshold), None)
    train_time = results["wall_time_s"] - results["eval_time_s"] - results["setup_time_s"]
    return {
        "solved_at": time.time() if solved else None,
        "steps": solved["step"] if solved else None,
        "final_return": results["evals"][-1]["mean"],
        "train_seconds": train_time,
        "train_sps": results["steps"] / train_time,
        "total_steps": results["steps"],
    }


def _sb3(model, eval_env, budget: int, eval_every: int, episodes: int, threshold: float | None) -> dict:
    """Train an SB3 model with periodic evaluation (stopping at ``threshold``); same figures as ``_lifelong``."""
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.evaluation import evaluate_policy

    class TimedEval(EvalCallback):
        eval_seconds = 0.0

        def _on_step(self) -> bool:
            start = time.perf_counter()
            out = super()._on_step()
            self.eval_seconds += time.perf_counter() - start
            return out

    stop = StopTrainingOnRewardThreshold(reward_threshold=threshold, verbose=0) if threshold is not None else None
    callback = TimedEval(eval_env, callback_on_new_best=stop, n_eval_episodes=episodes, eval_freq=eval_every,
                         deterministic=True, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=callback)
    learn_time = time.perf_counter() - start
    solved = threshold is not None and callback.best_mean_reward >= threshold
    eval_seconds = callback.eval_seconds
    if callback.last_mean_reward is not None and callback.n_calls % eval_every == 0:
        final = float(callback.last_mean_reward)
    else:
        final = float(evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True)[0])
    train_time = learn_time - eval_seconds
    return {
        "solved_at": time.time() if solved else None,
        "steps": model.num_timesteps if solved else None,
        "final_return": final,
        "train_seconds": train_time,
        "train_sps": model.num_timesteps / train_time,
        "total_steps": model.num_timesteps,
    }


def _sb3_envs(env_id: str, seed: int, eval_envs: int):
    """One training env and a vectorised eval env, seeded apart."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    return make_vec_env(env_id, n_envs=1, seed=seed), make_vec_env(env_id, n_envs=eval_envs, seed=seed + 1_000_003)


# ------------------------------------------------------------------------------ workers
def lifelong_sac_pendulum(seed: int, budget: int) -> dict:
    """lifelong SAC on Gymnasium's Pendulum-v1 with the RL-Zoo settings."""
    p = PENDULUM
    return _lifelong("configs/sac_pendulum.yaml", [
        f"run.seed={seed}", f"run.total_steps={budget}", f"run.eval_every={p['eval_every']}",
        f"run.eval_episodes={p['episodes']}", f"run.eval_num_envs={p['episodes']}",
        f"run.stop_return={p['threshold']}", "agent.learning_starts=100"], p["threshold"])


def sb3_sac_pendulum(seed: int, budget: int) -> dict:
    """SB3 SAC on Pendulum-v1 with RL-Zoo's hyperparameters."""
    from stable_baselines3 import SAC

    p = PENDULUM
    env, eval_env = _sb3_envs("Pendulum-v1", seed, p["episodes"])
    model = SAC("MlpPolicy", env, learning_rate=1e-3, seed=seed, verbose=0, device="cpu")
    return _sb3(model, eval_env, budget, p["eval_every"], p["episodes"], p["threshold"])


def lifelong_dqn_cartpole(seed: int, budget: int) -> dict:
    """lifelong double DQN on EnvPool's CartPole-v1 (the dqn_cartpole preset)."""
    p = CARTPOLE
    return _lifelong("configs/dqn_cartpole.yaml", [
        f"run.seed={seed}", f"run.total_steps={budget}", f"run.eval_every={p['eval_every']}",
        f"run.eval_episodes={p['episodes']}", f"run.eval_num_envs={p['episodes']}",
        f"run.stop_return={p['threshold']}"], p["threshold"])


def sb3_dqn_cartpole(seed: int, budget: int) -> dict:
    """SB3 DQN on CartPole-v1 with RL-Zoo's tuned hyperparameters."""
    from stable_baselines3 import DQN

    p = CARTPOLE
    env, eval_env = _sb3_envs("CartPole-v1", seed, p["episodes"])
    model = DQN("MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]},
                seed=seed, verbose=0, device="cpu")
    return _sb3(model, eval_env, budget, p["eval_every"], p["episodes"], p["threshold"])


def lifelong_halfcheetah(algo: str, seed: int, budget: int) -> dict:
    """lifelong SAC or TD3 on EnvPool's HalfCheetah-v4 (the presets), evaluated once at the budget."""
    return _lifelong(f"configs/{algo}_halfcheetah.yaml", [
        f"run.seed={seed}", f"run.total_steps={budget}", f"run.eval_every={budget}", "run.eval_episodes=10",
        "run.eval_num_envs=10"], None)


def sb3_halfcheetah_model(algo: str, env, seed: int):
    """SB3's SAC or TD3 on a HalfCheetah env with RL-Zoo's MuJoCo settings (10k random steps first)."""
    import numpy as np
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    if algo == "sac":
        return SAC("MlpPolicy", env, learning_starts=10_000, seed=seed, verbose=0, device="cpu")
    noise = NormalActionNoise(np.zeros(6), 0.1 * np.ones(6))
    return TD3("MlpPolicy", env, learning_starts=10_000, learning_rate=1e-3, batch_size=256,
               action_noise=noise, policy_kwargs={"net_arch": [400, 300]}, seed=seed, verbose=0, device="cpu")


def sb3_halfcheetah(algo: str, seed: int, budget: int) -> dict:
    """SB3 SAC or TD3 on Gymnasium's HalfCheetah-v4 with RL-Zoo's MuJoCo settings."""
    env, eval_env = _sb3_envs("HalfCheetah-v4", seed, 10)
    return _sb3(sb3_halfcheetah_model(algo, env, seed), eval_env, budget, budget, 10, None)


EXPERIMENTS = {
    "pendulum": {"lifelong_sac": lifelong_sac_pendulum, "sb3_sac": sb3_sac_pendulum},
    "cartpole": {"lifelong_dqn": lifelong_dqn_cartpole, "sb3_dqn": sb3_dqn_cartpole},
    "halfcheetah": {
        "lifelong_sac": lambda seed, budget: lifelong_halfcheetah("sac", seed, budget),
        "sb3_sac": lambda seed, budget: sb3_halfcheetah("sac", seed, budget),
        "lifelong_td3": lambda seed, budget: lifelong_halfcheetah("td3", seed, budget),
        "sb3_td3": lambda seed, budget: sb3_halfcheetah("td3", seed, budget),
    },
}
DEFAULT_BUDGET = {"pendulum": PENDULUM["budget"], "cartpole": CARTPOLE["budget"], "halfcheetah": 100_000}


def within_spread(ours: list[float], peer: list[float]) -> tuple[str, float, float]:
    """Verdict of lifelong's returns "within the peer's seed spread or above"; U of the peer over ours; p."""
    u, p = rank_test(peer, ours)
    not_below = statistics.mean(ours) >= min(peer)
    return ("met" if not_below and p >= 0.05 else "not met"), u, p


def main() -> None:
    """Run every contender of one experiment for every seed; print the rows and the median ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--contenders", default=None, help="comma-separated subset (default: all of the experiment)")
    parser.add_argument("--jobs", type=int, default=1, help="contenders run at a time")
    parser.add_argument("--worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workers = EXPERIMENTS[args.experiment]
    budget = args.budget or DEFAULT_BUDGET[args.experiment]
    if args.worker:
        print(json.dumps(workers[args.worker](args.seed, budget)))
        return
    names = [n for n in (args.contenders or ",".join(workers)).split(",") if n]
    unknown = sorted(set(names) - set(workers))
    if unknown:
        parser.error(f"--contenders: {unknown} not allowed for {args.experiment} (allowed: {', '.join(workers)})")

    rows: dict[str, list[dict]] = {name: [] for name in names}
    print(f"{args.experiment}, budget {budget} env steps")
    print(f"{'contender':<14} {'seed':>4} {'s to solve':>10} {'steps':>7} {'final return':>12} "
          f"{'train s':>8} {'train SPS':>9}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for name, seed, row in spawn_rotated(__file__, names, seeds, args.jobs, args.experiment, "--budget", str(budget)):
        rows[name].append(row)
        secs = f"{row['seconds_to_solve']:.1f}" if row.get("seconds_to_solve") else "-"
        print(f"{name:<14} {seed:>4} {secs:>10} {row['steps'] or '-':>7} {row['final_return']:>12.1f} "
              f"{row['train_seconds']:>8.1f} {row['train_sps']:>9.1f}", flush=True)

    print()
    print("medians; ratio = how many times better lifelong is")
    for ours_name in [n for n in names if n.startswith("lifelong_")]:
        peer_name = "sb3_" + ours_name.removeprefix("lifelong_")
        if peer_name not in rows:
            continue
        for key, label in (("seconds_to_solve", "s from start to solve"), ("steps", "env steps to solve"),
                           ("final_return", "final eval return"), ("train_sps", "training SPS")):
            ours, peer = median(rows[ours_name], key), median(rows[peer_name], key)
            if ours is None or peer is None:
                continue
            if key == "final_return":
                mine = [r[key] for r in rows[ours_name]]
                spread = [r[key] for r in rows[peer_name]]
                verdict, u, p = within_spread(mine, spread)
                print(f"{label:<22} {ours_name} {ours:>9.1f}  {peer_name} {peer:>9.1f} "
                      f"(peer seeds {min(spread):.1f}..{max(spread):.1f})")
                of_peer = f" ({statistics.mean(mine) / statistics.mean(spread):.2f}x)" if min(spread) > 0 else ""
                print(f"{'final eval return':<22} means {statistics.mean(mine):.1f} and {statistics.mean(spread):.1f}"
                      f"{of_peer}; U of {peer_name} over "
                      f"{ours_name} {u:g}/{len(mine) * len(spread)}, one-sided p {p:.4f}; within the peer's "
                      f"seed spread or above: {verdict}")
                continue
            ratio = ours / peer if key == "train_sps" else peer / ours
            print(f"{label:<22} {ours_name} {ours:>9.1f}  {peer_name} {peer:>9.1f}  ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
