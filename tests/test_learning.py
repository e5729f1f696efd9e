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
