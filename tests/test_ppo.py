"""PPO pieces: policy distributions against torch.distributions, KL early stop, continuous control smoke run."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lifelong.agents.ppo import ActorCritic, PPOConfig
from lifelong.config import build, load_config
from lifelong.run import Run, make_trainer, train

ROOT = Path(__file__).resolve().parent.parent


def agent(action_space, **overrides):
    cfg = build(PPOConfig, {"name": "ppo", **overrides})
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    return ActorCritic(obs_space, action_space, cfg)


def test_categorical_log_prob_and_entropy_match_torch():
    torch.manual_seed(0)
    ac = agent(gym.spaces.Discrete(4))
    obs = torch.randn(16, 3)
    actions = torch.randint(0, 4, (16,))
    logp, entropy, value = ac.evaluate_actions(obs, actions)
    logits, ref_value, _ = ac.forward_step(obs, ac.initial_state(16, "cpu"), torch.zeros(16, dtype=torch.bool))
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logp, dist.log_prob(actions))
    torch.testing.assert_close(entropy, dist.entropy())
    torch.testing.assert_close(value, ref_value)
    action, _, extras = ac.act(obs, ac.initial_state(16, "cpu"), torch.ones(16, dtype=torch.bool))
    torch.testing.assert_close(extras["log_prob"], dist.log_prob(action))
    greedy, _, _ = ac.act(obs, ac.initial_state(16, "cpu"), torch.ones(16, dtype=torch.bool), deterministic=True)
    torch.testing.assert_close(greedy, logits.argmax(-1))


def test_gaussian_log_prob_and_entropy_match_torch():
    torch.manual_seed(0)
    ac = agent(gym.spaces.Box(-2.0, 2.0, (2,), np.float32), log_std_init=-0.7)
    obs = torch.randn(8, 3)
    actions = torch.randn(8, 2)
    logp, entropy, _ = ac.evaluate_actions(obs, actions)
    mean, _, _ = ac.forward_step(obs, ac.initial_state(8, "cpu"), torch.zeros(8, dtype=torch.bool))
    dist = torch.distributions.Normal(mean, ac.log_std.exp())
    torch.testing.assert_close(logp, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    greedy, _, _ = ac.act(obs, ac.initial_state(8, "cpu"), torch.ones(8, dtype=torch.bool), deterministic=True)
    torch.testing.assert_close(greedy, mean)


def test_target_kl_stops_the_update_early(tmp_path):
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml",
                      ["run.progress=false", "agent.target_kl=1e-9", "agent.minibatch_size=64"])
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    from lifelong.agents.ppo import _FlatBatches

    n = 256
    returns, values = torch.randn(n, 1), torch.zeros(n, 1)
    # old log-probs far from the policy's ~-0.69: the KL is above the target from the start
    fields = (torch.randn(n, 1, 4), torch.randint(0, 2, (n, 1)), torch.full((n, 1), -0.9), values,
              torch.randn(n, 1), returns)
    trainer._update(_FlatBatches(fields, 64), returns, values, 0.2)
    assert trainer.optimizer.steps == 0
    cfg.agent.target_kl = None
    trainer._update(_FlatBatches(fields, 64), returns, values, 0.2)
    assert trainer.optimizer.steps == cfg.agent.epochs * (n // 64)
    run.close()


@pytest.mark.parametrize("backend, env_id", [("envpool", "Pendulum-v1"), ("gymnasium", "Pendulum-v1")])
def test_continuous_ppo_runs_and_logs(tmp_path, backend, env_id):
    cfg = load_config(
        ROOT / "configs/ppo_pendulum_gym.yaml",
        [f"env.backend={backend}", f"env.id={env_id}", "run.total_steps=1024", "run.eval_every=0",
         "run.eval_episodes=2", "run.progress=false", "agent.num_steps=128", "agent.epochs=2", "run.checkpoint_every=0",
         "agent.clip_vloss=true"],
    )
    results = train(cfg, tmp_path)
    assert results["steps"] == 1024
    assert results["final_eval"]["episodes"] == 2
    assert -2000 < results["final_eval"]["mean"] < 0  # Pendulum returns are negative, episodes of 200 steps
