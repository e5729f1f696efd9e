"""Stable-Baselines3 adapter: env semantics, training and resume through the run loop, checkpoints, schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import toy_envs
from lifelong.agents.sb3 import SB3Config, SB3Trainer, SB3VecEnv, metric_name, parse_schedule
from lifelong.checkpoint import CheckpointDir, load_checkpoint, save_checkpoint
from lifelong.config import ConfigError, EnvConfig, load_config
from lifelong.envs import make_env
from lifelong.run import Run, make_trainer, train

ROOT = Path(__file__).resolve().parent.parent
PPO_PRESET = ROOT / "configs" / "sb3_ppo_cartpole.yaml"
DQN_PRESET = ROOT / "configs" / "sb3_dqn_cartpole.yaml"


# ------------------------------------------------------------------ SB3VecEnv


def test_vec_env_maps_same_step_autoreset_to_sb3_convention() -> None:
    cfg = EnvConfig(backend="gymnasium", id="toy_envs:FixedLengthEnv", num_envs=3)
    env = SB3VecEnv(make_env(cfg, seed=5))
    env.seed(11)
    obs = env.reset()
    assert obs.shape == (3, 3) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, 0], [11, 12, 13])  # env i seeded with seed + i
    assert (obs[:, 1:] == 0).all()
    t = np.zeros(3, int)
    episode = np.zeros(3, int)
    returns = np.zeros(3)
    seen = {"terminated": 0, "truncated": 0}
    for _ in range(40):
        actions = np.array([1, 0, 1])
        obs, rewards, dones, infos = env.step(actions)
        platform = env.last_step
        np.testing.assert_allclose(rewards, actions + 0.5)
        returns += rewards
        t += 1
        for i in range(3):
            length = toy_envs.episode_length(11 + i, int(episode[i]))
            if t[i] >= length:
                assert dones[i]
                info = infos[i]
                # the true last observation of the finished episode, equal to the platform's final_obs
                np.testing.assert_array_equal(info["terminal_observation"], [11 + i, episode[i], t[i]])
                np.testing.assert_array_equal(info["terminal_observation"], platform.final_obs[i].numpy())
                truncated = episode[i] % 2 == 1  # even episodes terminate, odd ones truncate
                assert info["TimeLimit.truncated"] is bool(truncated)
                seen["truncated" if truncated else "terminated"] += 1
                assert info["episode"]["r"] == pytest.approx(returns[i])
                assert info["episode"]["l"] == t[i]
                episode[i] += 1
                t[i] = 0
                returns[i] = 0.0
                # the returned observation already starts the next episode
                np.testing.assert_array_equal(obs[i], [11 + i, episode[i], 0])
            else:
                assert not dones[i]
                assert infos[i] == {}
                np.testing.assert_array_equal(obs[i], [11 + i, episode[i], t[i]])
        np.testing.assert_array_equal(obs, platform.obs.numpy())
    assert seen["terminated"] > 0 and seen["truncated"] > 0
    env.close()


def test_vec_env_discrete_start_and_unsupported_calls() -> None:
    cfg = EnvConfig(backend="gymnasium", id="toy_envs:DiscreteEchoEnv", num_envs=2)
    env = SB3VecEnv(make_env(cfg, seed=0))
    assert env.action_space.n == 3 and int(env.action_space.start) == 0
    env.reset()
    obs, _, _, _ = env.step(np.array([0, 2]))
    # Discrete(3, start=2): index 0 -> action 2, index 2 -> action 4, observed one-hot
    np.testing.assert_array_equal(obs.argmax(1), [2, 4])
    assert env.get_attr("render_mode") == [None, None]
    assert not env.has_attr("gravity")
    assert env.env_is_wrapped(object) == [False, False]
    with pytest.raises(NotImplementedError, match="per-env method"):
        env.env_method("render")
    env.close()


# ------------------------------------------------------------- schedules, config


def test_linear_schedule_strings() -> None:
    schedule = parse_schedule("agent.kwargs.learning_rate", "lin_1e-3")
    assert schedule(1.0) == pytest.approx(1e-3)
    assert schedule(0.5) == pytest.approx(5e-4)
    assert schedule(0.0) == pytest.approx(0.0)
    assert parse_schedule("agent.kwargs.clip_range", 0.2) == 0.2
    for bad in ("lin_abc", "exp_1e-3", "lin_", "1e-3x", "lin_nan"):
        with pytest.raises(ConfigError) as info:
            parse_schedule("agent.kwargs.learning_rate", bad)
        message = str(info.value)
        assert "\n" not in message and message.startswith("agent.kwargs.learning_rate:") and repr(bad) in message


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^agent\.kwargs\.clip_range: 'lin_oops'"):
        load_config(PPO_PRESET, ["agent.kwargs.clip_range=lin_oops"])
    unknown = r"agent\.kwargs\.n_step: unknown PPO argument; did you mean 'agent\.kwargs\.n_steps'"
    with pytest.raises(ConfigError, match=unknown):
        load_config(PPO_PRESET, ["agent.kwargs.n_step=64"])
    with pytest.raises(ConfigError, match=r"agent\.kwargs\.seed: not allowed here \(use run\.seed\)"):
        load_config(PPO_PRESET, ["agent.kwargs.seed=3"])
    with pytest.raises(ConfigError, match=r"agent\.policy: 'MultiPolicy'"):
        load_config(PPO_PRESET, ["agent.policy=MultiPolicy"])
    with pytest.raises(ConfigError, match=r"agent\.algo: 'PP0'"):
        load_config(PPO_PRESET, ["agent.algo=PP0"])
    with pytest.raises(ConfigError, match=r"agent\.policy_kwargs\.activation_fn: 'swishy'"):
        load_config(PPO_PRESET, ["agent.policy_kwargs={activation_fn: swishy}"])
    cfg = load_config(DQN_PRESET)
    assert cfg.agent.algo == "DQN" and cfg.env.num_envs == 1 and cfg.agent.save_replay_buffer
    assert metric_name("train/value_loss") == "losses/value_loss"
    assert metric_name("train/learning_rate") == "charts/learning_rate"
    assert metric_name("rollout/ep_rew_mean") is None


# --------------------------------------------------------------- train and resume


def _fast_ppo(total: int):
    return load_config(PPO_PRESET, [
        f"run.total_steps={total}", "run.checkpoint_every=1024", "run.eval_every=0", "run.eval_episodes=2",
        "run.eval_num_envs=2", "run.progress=false", "run.log_every=512", "agent.kwargs.n_epochs=4",
    ])


def test_ppo_trains_checkpoints_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    results = train(_fast_ppo(2048), run_dir)
    assert results["steps"] == 2048 and results["agent"] == "sb3"
    assert (run_dir / "results.json").is_file() and (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents*"))
    ckpts = CheckpointDir(run_dir / "checkpoints")
    assert [p.name for p in ckpts.paths()][-1] == "step_000000002048.pt"
    saved = load_checkpoint(ckpts.paths()[-1])  # weights_only=True inside
    trainer_state = saved["trainer"]
    assert trainer_state["num_timesteps"] == 2048
    n_updates = trainer_state["counters"]["_n_updates"]
    assert n_updates == 8 * 4  # 8 rollouts of 8 envs x 32 steps, 4 epochs each

    # A trainer built for the resume restores the saved parameters and SB3's step counter.
    run, payload = Run.resume(run_dir, logger=False)
    try:
        trainer = make_trainer(run.cfg, run)
        trainer.load_state_dict(payload["trainer"])
        for name, tensor in trainer_state["modules"]["policy"].items():
            torch.testing.assert_close(trainer.model.policy.state_dict()[name], tensor)
        assert trainer.model.num_timesteps == run.step == 2048
        opt = trainer.model.policy.optimizer.state_dict()
        saved_opt = trainer_state["modules"]["policy.optimizer"]
        torch.testing.assert_close(opt["state"][0]["exp_avg"], saved_opt["state"][0]["exp_avg"])
        trainer.env.close()
    finally:
        run.close()

    results = train(resume=run_dir, overrides=["run.total_steps=3072"])
    assert results["steps"] == 3072
    resumed = load_checkpoint(ckpts.paths()[-1])["trainer"]
    assert resumed["num_timesteps"] == 3072
    assert resumed["counters"]["_n_updates"] == n_updates + 4 * 4  # continued, not restarted
    before = trainer_state["modules"]["policy"]
    assert any(not torch.equal(resumed["modules"]["policy"][k], v) for k, v in before.items())


def test_resumed_schedule_is_keyed_on_the_run_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(_fast_ppo(1024), run_dir)
    run, payload = Run.resume(run_dir, ["run.total_steps=2048"], logger=False)
    seen: list[tuple[int, float]] = []
    tick = run.tick

    def recording_tick(trainer, metrics=None):
        """Record the step and learning rate of every tick, then tick."""
        seen.append((run.step, metrics["charts/learning_rate"]))
        return tick(trainer, metrics)

    run.tick = recording_tick
    try:
        trainer = make_trainer(run.cfg, run)
        trainer.load_state_dict(payload["trainer"])
        trainer.train()
        model = trainer.model
        # learn(reset_num_timesteps=False) counted on from the restored num_timesteps: progress spans the run
        assert model._total_timesteps == 2048 and model.num_timesteps == run.step == 2048
        trainer.env.close()
    finally:
        run.close()
    # after each update the linear schedule stands where an uninterrupted 2048-step run would have it
    assert [s for s, _ in seen] == [1280, 1536, 1792, 2048]
    for step, lr in seen:
        assert lr == pytest.approx(1e-3 * (1 - step / 2048))


# ------------------------------------------------------------- off-policy state


def _off_policy_trainer(tmp_path: Path, overrides: list[str]) -> tuple[Run, SB3Trainer]:
    cfg = load_config(None, ["run.progress=false", "run.eval_every=0", "run.checkpoint_every=0", *overrides])
    run = Run.create(cfg, tmp_path, logger=False)
    return run, make_trainer(cfg, run)


def _round_trip(tmp_path: Path, trainer: SB3Trainer) -> dict:
    path = save_checkpoint(tmp_path / "state.pt", {"trainer": trainer.state_dict()})
    return load_checkpoint(path)["trainer"]


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a.cpu(), b.cpu())
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_dqn_state_round_trip_with_replay_buffer(tmp_path: Path) -> None:
    overrides = [
        "run.total_steps=300", "env.num_envs=2", "agent.name=sb3", "agent.algo=DQN", "agent.save_replay_buffer=true",
        "agent.kwargs={learning_starts: 50, train_freq: [15, step], gradient_steps: 4, batch_size: 32, "
        "buffer_size: 1000, target_update_interval: 20}",
        "agent.policy_kwargs={net_arch: [32, 32], activation_fn: relu}",
    ]
    run, trainer = _off_policy_trainer(tmp_path / "a", overrides)
    trainer.train()
    assert run.step == trainer.model.num_timesteps == 300
    state = _round_trip(tmp_path, trainer)
    assert state["exploration_rate"] == pytest.approx(trainer.model.exploration_rate)
    assert state["counters"]["_n_calls"] == 150 and state["counters"]["_n_updates"] > 0
    buffer = state["replay_buffer"]
    assert buffer["pos"] == 150 and not buffer["full"] and buffer["arrays"]["observations"].shape == (150, 2, 4)

    run2, fresh = _off_policy_trainer(tmp_path / "b", overrides)
    fresh.load_state_dict(state)
    model = fresh.model
    assert model.num_timesteps == 300 and model._n_calls == 150
    assert model.exploration_rate == pytest.approx(trainer.model.exploration_rate)
    assert model.learning_starts == 50  # buffer restored: no second warm-up
    np.testing.assert_array_equal(model.replay_buffer.observations, trainer.model.replay_buffer.observations)
    np.testing.assert_array_equal(model.replay_buffer.actions, trainer.model.replay_buffer.actions)
    _assert_same(fresh.state_dict(), state)
    for r, t in ((run, trainer), (run2, fresh)):
        t.env.close()
        r.close()


def test_sac_state_round_trip_on_gymnasium_pendulum(tmp_path: Path) -> None:
    overrides = [
        "run.total_steps=200", "env.backend=gymnasium", "env.id=Pendulum-v1", "env.num_envs=1",
        "env.normalize_obs=true", "agent.name=sb3", "agent.algo=SAC",
        "agent.kwargs={learning_starts: 100, batch_size: 32, buffer_size: 1000, learning_rate: lin_3e-4}",
        "agent.policy_kwargs={net_arch: [32, 32]}",
    ]
    run, trainer = _off_policy_trainer(tmp_path / "a", overrides)
    trainer.train()
    state = _round_trip(tmp_path, trainer)
    assert set(state["modules"]) == {"policy", "actor.optimizer", "critic.optimizer", "ent_coef_optimizer"}
    assert "log_ent_coef" in state["tensors"] and "obs_rms" in state["env"]
    assert "replay_buffer" not in state and state["counters"]["_n_updates"] == 100

    run2, fresh = _off_policy_trainer(tmp_path / "b", overrides)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.model.log_ent_coef, trainer.model.log_ent_coef)
    assert fresh.model.learning_starts == 200 + 100  # no saved buffer: warm up again before learning
    _assert_same(fresh.state_dict(), state)
    # the platform-facing agent acts within the action bounds, as a tensor on the obs device
    obs = torch.randn(4, 3)
    first = torch.ones(4, dtype=torch.bool)
    action, agent_state, extras = fresh.agent.act(obs, fresh.agent.initial_state(4, "cpu"), first, True)
    assert action.shape == (4, 1) and action.dtype == torch.float32 and agent_state == () and extras == {}
    assert bool((action.abs() <= 2.0).all())
    for r, t in ((run, trainer), (run2, fresh)):
        t.env.close()
        r.close()


def test_algo_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(None, ["run.progress=false", "env.num_envs=1", "agent.name=sb3", "agent.algo=SAC"])
    run = Run.create(cfg, tmp_path, logger=False)
    try:
        with pytest.raises(ConfigError, match=r"agent\.algo: SB3 SAC cannot be built on 'CartPole-v1'"):
            make_trainer(cfg, run)
    finally:
        run.close()
    assert SB3Config().algo == "PPO"
