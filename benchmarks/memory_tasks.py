"""Recurrent PPO with each memory core on native POPGym tasks, against sb3-contrib's RecurrentPPO.

For every core and task, the preset `configs/ppo_<core>_<task>.yaml` trains for
`--steps` env steps (the presets' own budget is 5M, the issue's protocol); printed:
training SPS (setup and evaluation excluded) and MMER, the maximum over evaluations
of the mean episode return (POPGym's metric). The peer, sb3-contrib RecurrentPPO
(MlpLstmPolicy) on the `popgym` package's env of the same task (8 envs), trains
`--peer-steps` steps in the same invocation; its SPS gives the ratio.

    python benchmarks/memory_tasks.py [--steps 200000] [--peer-steps 4096] [--cores gru,ffm,...]
        [--tasks repeat_previous,position_only_cartpole] [--evals 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"repeat_previous": "RepeatPreviousEasy", "position_only_cartpole": "PositionOnlyCartPoleEasy"}
CORES = ["mlp", "gru", "lstm", "s5", "ffm", "hcam", "transformer"]


def run_lifelong(core: str, task: str, steps: int, evals: int = 4) -> dict:
    """Train the preset for ``steps`` env steps; SPS and MMER."""
    from lifelong.config import load_config
    from lifelong.run import train

    evaluate_every = max(steps // evals, 8192)
    cfg = load_config(ROOT / f"configs/ppo_{core}_{task}.yaml",
                      [f"run.total_steps={steps}", f"run.eval_every={evaluate_every}", "run.progress=false",
                       "run.checkpoint_every=0"])
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, f"{tmp}/run")
    train_time = results["wall_time_s"] - results["eval_time_s"] - results["setup_time_s"]
    return {"sps": results["steps"] / train_time, "mmer": max(e["mean"] for e in results["evals"]),
            "steps": results["steps"]}


def run_peer(task: str, steps: int) -> dict:
    """sb3-contrib RecurrentPPO (MlpLstmPolicy) on popgym's env, 8 envs, one torch thread."""
    import popgym.envs.position_only_cartpole as poc
    import popgym.envs.repeat_previous as rp
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env_cls = {"repeat_previous": rp.RepeatPreviousEasy, "position_only_cartpole": poc.PositionOnlyCartPoleEasy}[task]
    env = make_vec_env(env_cls, n_envs=8, seed=0)
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=128, batch_size=256, n_epochs=4, verbose=0, device="cpu")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return {"sps": model.num_timesteps / (time.perf_counter() - started), "steps": model.num_timesteps}


def main() -> None:
    """Every core on both tasks, then the peer; print SPS, MMER and the SPS ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--peer-steps", type=int, default=4096)
    parser.add_argument("--cores", default=",".join(CORES))
    parser.add_argument("--evals", type=int, default=4, help="evaluations per run (MMER is their max)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    cores = args.cores.split(",")
    tasks = args.tasks.split(",")
    for key, names, allowed in (("--cores", cores, CORES), ("--tasks", tasks, list(TASKS))):
        unknown = [n for n in names if n not in allowed]
        if unknown:
            parser.error(f"{key}: unknown {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    peers = {task: run_peer(task, args.peer_steps) for task in tasks}
    print(f"{'core':<12} {'task':<24} {'steps':>8} {'train SPS':>10} {'MMER':>7} {'SPS / sb3-contrib':>18}")
    for task in tasks:
        for core in cores:
            row = run_lifelong(core, task, args.steps, args.evals)
            print(f"{core:<12} {task:<24} {row['steps']:>8} {row['sps']:>10,.0f} {row['mmer']:>7.3f} "
                  f"{row['sps'] / peers[task]['sps']:>17.0f}x", flush=True)
        peer = peers[task]
        print(f"{'sb3-contrib':<12} {task:<24} {peer['steps']:>8} {peer['sps']:>10,.0f} {'-':>7} {'1':>17}x")


if __name__ == "__main__":
    main()
