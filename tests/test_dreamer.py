"""Dreamer: end-to-end runs (discrete, continuous), resume, act/observe consistency, return alignment, configs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch

from lifelong.agents.dreamer import DreamerAgent, imagination_losses, imagined_continuation
from lifelong.config import ConfigError, config_from_dict, load_config
from lifelong.run import Run, make_trainer, train
from lifelong.world_models import ReturnNormalizer

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"eval_every": 0, "eval_episodes": 2, "eval_num_envs": 2, "checkpoint_every": 0, "log_every": 64,
         "progress": False, "torch_threads": 1}
TINY_MODEL = {"name": "latent", "size": "tiny", "hidden": 32, "stoch": 4, "classes": 4}
BACKBONES = {
    "gru": {"name": "gru", "hidden": 32},
    "s5": {"name": "s5", "d_model": 32, "state_size": 16, "layers": 1},
    "transformer": {"name": "transformer", "d_model": 32, "heads": 2, "layers": 1, "window": 8},
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on a shared 2-core machine: several threads oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dreamer_config(env_id: str, total_steps: int, backbone: str = "gru", **agent) -> dict:
    """A tiny Dreamer run on native ``env_id`` (2 envs, updates from step 64)."""
    return {
        "run": {"name": "dreamer_test", "total_steps": total_steps, **QUIET},
        "env": {"backend": "native", "id": env_id, "num_envs": 2},
        "agent": {"name": "dreamer", "world_model": {**TINY_MODEL, "backbone": BACKBONES[backbone]},
                  "batch_size": 4, "sequence_length": 8, "learning_starts": 64, "train_ratio": 16,
                  "horizon": 5, "hidden": 32, "layers": 1, **agent},
    }


def scalar_tags(run_dir: Path) -> set[str]:
    """Scalar tags TensorBoard would show for ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize("env_id, backbone", [("CartPole", "gru"), ("Pendulum", "gru"), ("CartPole", "s5")])
def test_dreamer_trains_end_to_end_and_writes_metrics(tmp_path, env_id, backbone):
    cfg = config_from_dict(dreamer_config(env_id, total_steps=192, backbone=backbone))
    results = train(cfg, tmp_path)
    assert results["steps"] == 192 and results["final_eval"] is not None
    tags = scalar_tags(tmp_path)
    for name in ("losses/world_model", "losses/actor", "losses/critic", "world_model/recon", "world_model/kl",
                 "world_model/reward", "world_model/cont", "dreamer/return_scale"):
        assert name in tags, sorted(tags)


def test_updates_change_every_part_and_follow_the_train_ratio(tmp_path):
    cfg = config_from_dict(dreamer_config("CartPole", total_steps=160))
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    before = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
    trainer.train()
    # Steps 64..160 are 49 iterations of 2 envs (the one reaching learning_starts counts) at
    # 16 / (4 * 8) = 0.5 updates per env step.
    assert trainer.updates == 49
    after = trainer.agent.state_dict()
    for prefix in ("world_model.backbone.", "world_model.encoder.", "actor.", "critic.", "slow_critic."):
        changed = [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert changed, prefix
    run.close()


def test_checkpoint_resume_continues_at_the_same_step_with_identical_state(tmp_path):
    cfg = config_from_dict(dreamer_config("CartPole", total_steps=128, save_replay=True))
    train(cfg, tmp_path)
    run, payload = Run.resume(tmp_path, ["run.total_steps=192"], logger=False)
    trainer = make_trainer(run.cfg, run)
    trainer.load_state_dict(payload["trainer"])
    saved = payload["trainer"]
    assert run.step == 128 and len(trainer.replay) == 128
    for key, value in trainer.agent.state_dict().items():
        torch.testing.assert_close(value, saved["agent"][key], rtol=0, atol=0)
    for name in ("model_opt", "backbone_opt", "actor_opt", "critic_opt"):
        opt = getattr(trainer, name)
        assert opt.steps == saved[name]["steps"] == trainer.updates > 0
        torch.testing.assert_close(opt.exp_avg_sq, saved[name]["exp_avg_sq"], rtol=0, atol=0)
    torch.testing.assert_close(trainer.normalizer.high, saved["normalizer"]["high"])
    run.close()
    results = train(resume=tmp_path, overrides=["run.total_steps=192"])
    assert results["steps"] == 192


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_acting_step_by_step_gives_the_features_of_observing_the_sequence(backbone):
    torch.manual_seed(0)
    cfg = config_from_dict(dreamer_config("CartPole", 100, backbone)).agent
    agent = DreamerAgent(gym.spaces.Box(-5, 5, (3,)), gym.spaces.Discrete(3), cfg)
    T, B = 12, 3
    obs = torch.randn(T, B, 3)
    is_first = torch.zeros(T, B, dtype=torch.bool)
    is_first[0] = True
    is_first[5, 1] = is_first[9, 0] = True
    state = agent.initial_state(B, "cpu")
    feats, actions = [], []
    with torch.no_grad():
        for t in range(T):
            _, state, extras = agent.act(obs[t], state, is_first[t], deterministic=True)
            feats.append(extras["feat"])
            actions.append(extras["action"])
        action = torch.stack(actions)
        prev_action = torch.cat([torch.zeros_like(action[:1]), action[:-1]])
        posterior, _ = agent.world_model.observe(obs, prev_action, is_first, sample=False)
    torch.testing.assert_close(torch.stack(feats), posterior["feat"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(action, torch.nn.functional.one_hot(action.argmax(-1), 3).float())  # model format


def test_actor_and_critic_losses_use_the_aligned_lambda_returns():
    torch.manual_seed(0)
    cfg = load_config(None, ["agent={name: dreamer, gamma: 0.5, lam: 1.0, slow_reg: 0.0, entropy: 0.1}"]).agent
    agent = DreamerAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), cfg)
    H, N = 3, 2
    feat = torch.randn(H + 1, N, agent.world_model.feat_dim)
    action = torch.nn.functional.one_hot(torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]]), 2).float()
    reward = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # reward[k] of action[k]
    cont = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # env 0 ends with action[1]
    # The critic's zero-initialised output predicts exactly 0, so the returns are pure reward sums:
    # env 0: R2 = 3, R1 = 2 + 0 (ended), R0 = 1 + 0.5 * 2 = 2; env 1: R2 = 3, R1 = 3.5, R0 = 2.75.
    expected = torch.tensor([[2.0, 2.75], [2.0, 3.5], [3.0, 3.0]])
    weight = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 0.25]])  # prod_{j<k} gamma * cont[j]
    actor_loss, critic_loss, metrics = imagination_losses(
        agent, {"feat": feat, "action": action}, reward, cont, ReturnNormalizer(), cfg)
    torch.testing.assert_close(metrics["dreamer/return"], expected.mean())
    log_prob, entropy = agent.actor.log_prob_entropy(feat[:-1], action[:-1])
    # Return scale is still 1 after one EMA step, and V = 0: the advantage is the return itself.
    want_actor = -(weight * (log_prob * expected + 0.1 * entropy)).mean()
    torch.testing.assert_close(actor_loss, want_actor)
    want_critic = (weight * agent.critic.loss(feat[:-1], expected)).mean()
    torch.testing.assert_close(critic_loss, want_critic)


@pytest.mark.parametrize("p_continue, mode", [(0.9, 1.0), (0.3, 0.0)])
def test_imagined_continuation_is_the_heads_mode_or_its_probability(p_continue, mode):
    """A 10% risk of ending (the tiny CartPole model gives 2-7% at the track's edge) vanishes in
    the mode and stays in the probability; a 70% risk is an end in the mode and 0.3 otherwise."""
    cfg = load_config(None, ["agent={name: dreamer}"]).agent
    wm = DreamerAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), cfg).world_model
    last = wm.continue_head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(torch.logit(torch.tensor(p_continue)).item())
    feat = torch.randn(4, 3, wm.feat_dim)
    torch.testing.assert_close(imagined_continuation(wm, feat, "mode"), torch.full((4, 3), mode))
    torch.testing.assert_close(imagined_continuation(wm, feat, "probability"), torch.full((4, 3), p_continue))


def test_continuous_actor_gets_gradient_through_the_model_returns():
    torch.manual_seed(0)
    cfg = load_config(None, ["agent={name: dreamer, horizon: 4}"]).agent
    agent = DreamerAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)), cfg)
    wm = agent.world_model
    with torch.no_grad():  # give the reward head a slope so that returns depend on the actions
        agent.world_model.reward_head.out.weight.normal_(0, 0.1)
    obs = torch.randn(6, 2, 3)
    is_first = torch.zeros(6, 2, dtype=torch.bool)
    is_first[0] = True
    post, _ = wm.observe(obs, torch.zeros(6, 2, 1), is_first)
    start = wm.start_states(post, wm.initial_state(2, "cpu"))
    traj = wm.imagine(lambda f: agent.actor.sample(f.detach()), start, cfg.horizon)
    assert traj["action"].abs().max() <= 1
    reward = wm.predict_reward(traj["feat"][1:])
    actor_loss, _, _ = imagination_losses(agent, traj, reward, torch.ones_like(reward), ReturnNormalizer(), cfg)
    params = list(agent.actor.parameters())
    grads = torch.autograd.grad(actor_loss, params)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_env_actions_are_indices_or_rescaled_to_the_box():
    cfg = load_config(None, ["agent={name: dreamer}"]).agent
    agent = DreamerAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)), cfg)
    torch.testing.assert_close(agent.to_env(torch.tensor([[-1.0], [0.5]])), torch.tensor([[-2.0], [1.0]]))
    agent = DreamerAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3), cfg)
    assert agent.to_env(torch.eye(3)[[2, 0]]).tolist() == [2, 0]


@pytest.mark.parametrize("override, key", [
    ("agent.world_model.backbone.name=lstmm", "agent.world_model.backbone.name"),
    ("agent.world_model.name=ensemble", "agent.world_model.name"),
    ("agent.min_std=2.0", "agent.min_std"),
    ("agent.train_ratio=0", "agent.train_ratio"),
    ("agent.bins=254", "agent.bins"),
    ("agent.imagined_continue=sometimes", "agent.imagined_continue"),
    ("agent.world_model.bins=254", "agent.world_model.bins"),
    ("agent.horizon=0", "agent.horizon"),
])
def test_bad_settings_are_one_line_errors(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs/dreamer_cartpole.yaml", [override])
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message


def test_every_dreamer_preset_loads_with_its_backbone():
    presets = sorted(ROOT.glob("configs/dreamer_*.yaml"))
    backbones = set()
    for path in presets:
        cfg = load_config(path)
        assert cfg.agent.name == "dreamer" and cfg.run.name == path.stem and cfg.run.torch_threads == 1
        backbones.add(cfg.agent.world_model.backbone.name)
        if path.stem != "dreamer_cartpole":
            assert path.stem.startswith(f"dreamer_{cfg.agent.world_model.backbone.name}_")
    assert {"gru", "s5", "transformer"} <= backbones


@pytest.mark.slow
def test_dreamer_learns_cartpole(tmp_path):
    cfg = load_config(ROOT / "configs/dreamer_cartpole.yaml",
                      ["run.progress=false", "run.checkpoint_every=0", *LEARNING_BUDGET])
    results = train(cfg, tmp_path)
    assert max(e["mean"] for e in results["evals"]) >= LEARNING_THRESHOLD, results["evals"]


# Calibrated on 2-core CPUs (see docs/benchmarks.md, "Dreamer on CartPole-v1"). The same seed is not
# the same run on every CPU (float rounding differs between kernels and RL amplifies it): seed 0 reached
# 224 at 10k steps on one machine and 142 at 12k, 183 at 14k on another. The untrained deterministic
# policy scores 9.5, so 120 within 14k steps (about 750 updates, ~5 min) is learning with a margin.
# The preset now trains at train_ratio 128; the test keeps the ratio it was calibrated with.
LEARNING_BUDGET = ["run.total_steps=14000", "run.eval_every=2000", "agent.train_ratio=32"]
LEARNING_THRESHOLD = 120.0
