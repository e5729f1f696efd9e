"""SAC: Polyak averaging, tanh log-prob, temperature direction, bootstrapping, checkpoint/resume, learning."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from lifelong.agents.offpolicy import load_replay, polyak_update
from lifelong.agents.sac import Actor, SACTrainer, tanh_log_prob, td_target
from lifelong.config import ConfigError, load_config
from lifelong.envs.base import Step
from lifelong.optim import FlatAdam
from lifelong.replay import TransitionReplay, next_observation
from lifelong.run import Run, make_trainer, train

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "configs/sac_pendulum.yaml"
TINY = [
    "run.eval_every=0",
    "run.eval_episodes=1",
    "run.eval_num_envs=1",
    "run.checkpoint_every=0",
    "run.log_every=100",
    "run.progress=false",
    "run.stop_return=null",
    "agent.learning_starts=100",
    "agent.batch_size=32",
    "agent.memory.hidden=[32,32]",
]


def test_polyak_update_by_hand():
    online = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    target = [torch.tensor([0.0, 10.0]), torch.tensor([[-1.0]])]
    old = [t.clone() for t in target]
    polyak_update(target, online, 0.1)
    for t, o, before in zip(target, online, old):
        torch.testing.assert_close(t, 0.1 * o + 0.9 * before)
    torch.testing.assert_close(target[0], torch.tensor([0.1, 9.2]))


def test_tanh_log_prob_matches_transformed_distribution():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.randn(64, 3) * 0.5
    u = mean + log_std.exp() * torch.randn(64, 3)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    expected = dist.log_prob(torch.tanh(u).clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    ours = tanh_log_prob(u, mean, log_std)
    # TanhTransform's inverse (atanh) loses precision near +-1; compare where it is accurate.
    ok = torch.tanh(u).abs() < 0.999
    assert ok.sum() > 150
    torch.testing.assert_close(ours[ok.all(-1)], expected[ok.all(-1)], atol=1e-4, rtol=1e-4)


def test_actor_sample_log_prob_is_the_squashed_density():
    torch.manual_seed(1)
    actor = Actor(4, 2, load_config(PRESET).agent)
    obs = torch.randn(128, 4)
    torch.manual_seed(2)
    action, log_prob = actor.sample(obs)
    mean, log_std = actor(obs)
    torch.manual_seed(2)
    u = mean + log_std.exp() * torch.randn_like(mean)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    torch.testing.assert_close(action, torch.tanh(u))
    torch.testing.assert_close(log_prob, dist.log_prob(action).sum(-1), atol=1e-3, rtol=1e-3)
    assert action.abs().max() <= 1


@pytest.mark.parametrize("log_std_bias, direction", [(0.0, -1), (-10.0, +1)])
def test_temperature_moves_toward_target_entropy(log_std_bias, direction):
    torch.manual_seed(0)
    cfg = load_config(PRESET).agent
    actor = Actor(3, 1, cfg)
    with torch.no_grad():
        actor.log_std.weight.zero_()
        actor.log_std.bias.fill_(log_std_bias)  # log_std -1.5 (entropy > -1) or about -5 (entropy < -1)
        _, log_prob = actor.sample(torch.randn(512, 3))
    target_entropy = -1.0
    entropy = float(-log_prob.mean())
    assert (entropy > target_entropy) == (direction < 0), entropy
    log_alpha = torch.nn.Parameter(torch.tensor(0.0))
    fake = SimpleNamespace(agent=SimpleNamespace(log_alpha=log_alpha), target_entropy=target_entropy,
                           alpha_opt=FlatAdam([log_alpha], lr=1e-2))
    SACTrainer.alpha_step(fake, log_prob)
    assert float(log_alpha.detach()) * direction > 0


def test_td_target_bootstraps_on_truncation_not_on_termination():
    reward = torch.tensor([1.0, 2.0, 3.0])
    terminated = torch.tensor([True, False, False])
    next_q = torch.tensor([10.0, 20.0, 30.0])
    next_log_prob = torch.tensor([-1.0, -2.0, 0.5])
    target = td_target(reward, terminated, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    assert target[0] == 1.0  # terminated: the reward alone
    torch.testing.assert_close(target[1], torch.tensor(2.0 + 0.9 * (20.0 + 0.5 * 2.0)))  # truncated row
    torch.testing.assert_close(target[2], torch.tensor(3.0 + 0.9 * (30.0 - 0.25)))


def test_truncated_rows_bootstrap_from_final_obs_through_the_replay():
    # Env 0 truncates, env 1 terminates, env 2 continues: next_obs is final_obs for 0 and 1.
    obs = torch.tensor([[100.0], [200.0], [3.0]])  # 0 and 1 already show the next episode's first obs
    final = torch.tensor([[7.0], [8.0], [3.0]])
    step = Step(obs=obs, reward=torch.ones(3), terminated=torch.tensor([False, True, False]),
                truncated=torch.tensor([True, False, False]), is_first=torch.tensor([True, True, False]),
                final_obs=final, info={})
    replay = TransitionReplay(3, 3, (1,), (1,), torch.float32, "cpu")
    replay.add(torch.zeros(3, 1), torch.zeros(3, 1), step.reward, step.terminated, step.truncated,
               next_observation(step))
    b = {k: v[0] for k, v in replay.fields.items()}
    torch.testing.assert_close(b["next_obs"], torch.tensor([[7.0], [8.0], [3.0]]))
    next_q = 2.0 * b["next_obs"].squeeze(-1)  # a deterministic "Q_targ(s')"
    target = td_target(b["reward"], b["terminated"], next_q, torch.zeros(3), alpha=1.0, gamma=0.5)
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.5 * 14.0, 1.0, 1.0 + 0.5 * 6.0]))


def test_replay_reload_into_other_capacity_keeps_newest_rows_in_order():
    small = TransitionReplay(4, 1, (1,), (1,), torch.float32, "cpu")
    for i in range(6):  # wraps: holds 2, 3, 4, 5
        v = torch.full((1, 1), float(i))
        small.add(v, v, v[:, 0], torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool), v)
    big = TransitionReplay(10, 1, (1,), (1,), torch.float32, "cpu")
    load_replay(big, small.state_dict())
    assert len(big) == 4 and big.pos == 4 and not big.full
    assert big.fields["obs"][:4, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    tiny = TransitionReplay(3, 1, (1,), (1,), torch.float32, "cpu")
    load_replay(tiny, small.state_dict())
    assert tiny.full and tiny.fields["obs"][:, 0, 0].tolist() == [3.0, 4.0, 5.0]


def test_checkpoint_resume_continues_steps_and_restores_replay(tmp_path):
    cfg = load_config(PRESET, TINY + ["run.total_steps=300", "agent.save_replay=true"])
    first = train(cfg, tmp_path)
    assert first["steps"] == 300
    run, payload = Run.resume(tmp_path, ["run.total_steps=500"], logger=False)
    assert run.step == 300
    trainer = make_trainer(run.cfg, run)
    trainer.load_state_dict(payload["trainer"])
    assert len(trainer.replay) == 300
    saved = payload["trainer"]["learner"]
    for key, value in trainer.agent.state_dict().items():
        torch.testing.assert_close(value, saved["agent"][key])
    assert trainer.critic_opt.state_dict()["steps"] == saved["critic_opt"]["steps"] == trainer.updates == 201
    assert payload["trainer"]["updates"] == 201
    assert "log_alpha" in saved["agent"] and "q1_target.net.0.weight" in saved["agent"]
    run.close()
    results = train(resume=tmp_path, overrides=["run.total_steps=500"])
    assert results["steps"] == 500
    run, payload = Run.resume(tmp_path, ["run.total_steps=600"], logger=False)
    assert run.step == 500
    assert payload["trainer"]["updates"] == 401
    assert payload["trainer"]["replay"]["fields"]["obs"].shape[0] == 500
    run.close()


def test_checkpoint_leaves_out_replay_by_default(tmp_path):
    cfg = load_config(PRESET, TINY + ["run.total_steps=150"])
    train(cfg, tmp_path)
    run, payload = Run.resume(tmp_path, logger=False)
    assert "replay" not in payload["trainer"]
    run.close()


@pytest.mark.slow
def test_sac_solves_pendulum(tmp_path):
    cfg = load_config(PRESET, ["run.progress=false"])
    started = time.perf_counter()
    results = train(cfg, tmp_path)
    seconds = time.perf_counter() - started
    best = results["best_eval"]
    print(f"SAC Pendulum-v1: eval return {best['mean']:.1f} at step {best['step']}, "
          f"{results['steps']} steps in {seconds:.1f}s")
    assert best["mean"] >= -200
