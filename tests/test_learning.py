"""Learning runs that train to a threshold (marked slow; they run in CI)."""

from pathlib import Path

import pytest

from lifelong.config import load_config
from lifelong.run import train

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_ppo_solves_cartpole(tmp_path):
    """PPO with the default preset reaches a mean evaluation return of 475 on CartPole-v1 (EnvPool)."""
    cfg = load_config(
        ROOT / "configs/ppo_cartpole.yaml",
        ["run.eval_every=5000", "run.eval_episodes=20", "run.stop_return=475", "run.progress=false"],
    )
    results = train(cfg, tmp_path)
    best = results["best_eval"]
    assert best["mean"] >= 475, results["evals"]
    assert best["episodes"] == 20
    assert results["steps"] <= 100_096


RECALL = ["env.backend=native", "env.id=RepeatPrevious", "env.kwargs={k: 2}", "env.max_episode_steps=16",
          "env.num_envs=32", "agent.share_core=true", "agent.num_steps=32", "agent.epochs=4",
          "agent.minibatch_size=256", "agent.lr=1e-3", "agent.gamma=0.5", "agent.gae_lambda=0.95",
          "agent.anneal_clip=false", "agent.anneal_lr=false", "run.total_steps=61440", "run.eval_every=0", "run.eval_episodes=32",
          "run.eval_num_envs=32", "run.checkpoint_every=0", "run.progress=false"]


@pytest.mark.slow
@pytest.mark.parametrize("core, solves", [("gru", True), ("ffm", True), ("mlp", False)])
def test_recurrent_ppo_solves_short_delay_recall_that_mlp_cannot(tmp_path, core, solves):
    """Native RepeatPrevious with a delay of 2 in 16-step episodes: the best return is 15/50 = 0.30.
    GRU and FFM cores reach it within 61k steps; the memoryless MLP cannot beat chance (-0.17)."""
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", RECALL + [f"agent.memory={{name: {core}}}"])
    final = train(cfg, tmp_path)["final_eval"]["mean"]
    if solves:
        assert final >= 0.27, final
    else:
        assert final <= 0.0, final
