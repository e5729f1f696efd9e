"""TD3 and DQN, and what all off-policy agents share: episode-boundary targets on a chain with
known values, the update schedule, target updates, checkpoint/resume and learning runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong.agents.dqn import dqn_target, linear_epsilon
from lifelong.agents.td3 import td3_target
from lifelong.config import ConfigError, config_from_dict, load_config
from lifelong.run import Run, make_trainer, train

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"eval_every": 0, "eval_episodes": 1, "eval_num_envs": 1, "checkpoint_every": 0, "log_every": 1000,
         "progress": False, "torch_threads": 1}


def chain_config(agent: dict, total_steps: int, discrete: bool = False) -> dict:
    """A run on the ChainEnv (gamma 0.5: truncating value 2, terminating value 1.5)."""
    return {
        "run": {"name": "chain", "total_steps": total_steps, **QUIET},
        "env": {"backend": "gymnasium", "id": "toy_envs:ChainEnv", "num_envs": 2, "vectorization": "sync",
                "kwargs": {"discrete": discrete}},
        "agent": {"gamma": 0.5, "learning_starts": 64, "batch_size": 64, "lr": 3e-3,
                  "memory": {"name": "mlp", "hidden": [32], "activation": "relu"}, **agent},
    }


CHAIN_AGENTS = {
    "td3": {"name": "td3", "tau": 0.05},
    "sac": {"name": "sac", "alpha": 1e-6, "autotune": False, "tau": 0.05},
    "dqn": {"name": "dqn", "train_every": 1, "utd": 1.0, "target_update_every": 50, "loss": "mse",
            "exploration_fraction": 0.5},
}


@pytest.mark.parametrize("algo", sorted(CHAIN_AGENTS))
def test_critics_bootstrap_through_truncation_not_termination(tmp_path, algo):
    discrete = algo == "dqn"
    cfg = config_from_dict(chain_config(CHAIN_AGENTS[algo], total_steps=1600, discrete=discrete))
    torch.manual_seed(0)
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    trainer.train()
    obs = torch.tensor([[0.5, 0.0], [0.5, 1.0]])
    with torch.no_grad():
        if discrete:
            q = trainer.agent.q(obs)  # every action has the same value here
        else:
            action = torch.zeros(2, 1)
            q = trainer.agent.q1(obs, action).unsqueeze(-1)
    terminating, truncating = q[0], q[1]
    # Known values: 1.5 where the episode terminates, 2.0 where it is cut by the time limit. Treating
    # truncation as an end would give 1.5 on both; bootstrapping through termination 2.0 on both.
    torch.testing.assert_close(terminating, torch.full_like(terminating, 1.5), atol=0.08, rtol=0)
    torch.testing.assert_close(truncating, torch.full_like(truncating, 2.0), atol=0.08, rtol=0)
    run.close()


GRU = {"name": "gru", "hidden": 32}
SEQUENCE = {"sequence_length": 8, "burn_in": 2, "head_hidden": [32]}


@pytest.mark.parametrize("algo", sorted(CHAIN_AGENTS))
def test_memory_core_critics_learn_the_chain_values(tmp_path, algo):
    discrete = algo == "dqn"
    agent = {**CHAIN_AGENTS[algo], **SEQUENCE, "memory": GRU}
    cfg = config_from_dict(chain_config(agent, total_steps=1600, discrete=discrete))
    torch.manual_seed(0)
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    trainer.train()
    agent = trainer.agent
    # Five steps of one episode of each kind, through the core: every step has the same value.
    obs = torch.tensor([[0.5, 0.0], [0.5, 1.0]])
    state = agent.initial_state(2, "cpu")
    values = []
    with torch.no_grad():
        for t in range(5):
            feat, state = agent.encode(obs, state, torch.full((2,), t == 0))
            values.append(agent.q(feat).mean(-1) if discrete else agent.q1(feat, torch.zeros(2, 1)))
    values = torch.stack(values)  # [5, 2]
    torch.testing.assert_close(values[:, 0], torch.full((5,), 1.5), atol=0.12, rtol=0)
    torch.testing.assert_close(values[:, 1], torch.full((5,), 2.0), atol=0.12, rtol=0)
    run.close()


@pytest.mark.parametrize("core", ["gru", "transformer"])
def test_sequence_batch_aligns_rows_features_and_truncation_bootstrap(tmp_path, core):
    memory = GRU if core == "gru" else {"name": "transformer", "d_model": 16, "heads": 2, "layers": 1, "window": 8}
    agent_cfg = {**CHAIN_AGENTS["dqn"], "sequence_length": 6, "burn_in": 2, "batch_size": 6, "memory": memory,
                 "head_hidden": [8]}
    cfg = config_from_dict(chain_config(agent_cfg, total_steps=100, discrete=True))
    cfg.env.num_envs = 1
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    agent, replay = trainer.agent, trainer.replay
    torch.manual_seed(3)
    # Exactly one window of 2 + 6 + 1 rows: the sample is the whole history, in order. Episodes end
    # at rows 1 (truncated, in the burn-in: not trained), 3 (terminated) and 4, 5, 6 (truncated, in
    # consecutive rows, so they use alternate lanes).
    steps = 9
    obs, final_obs = torch.randn(steps, 1, 2), torch.randn(steps, 1, 2)
    truncated = torch.zeros(steps, 1, dtype=torch.bool)
    terminated = torch.zeros(steps, 1, dtype=torch.bool)
    truncated[[1, 4, 5, 6]] = True
    terminated[3] = True
    is_first = torch.zeros(steps, 1, dtype=torch.bool)
    is_first[0] = True
    is_first[1:] = (truncated | terminated)[:-1]
    state = agent.initial_state(1, "cpu")
    feats, finals = [], []
    with torch.no_grad():
        for t in range(steps):
            replay.add(obs[t], torch.tensor([t % 2]), torch.tensor([float(t)]), terminated[t], truncated[t],
                       is_first[t], final_obs[t], state=state)
            feat, next_state = agent.encode(obs[t], state, is_first[t])
            feats.append(feat)
            finals.append(agent.encode(final_obs[t], next_state, torch.zeros(1, dtype=torch.bool))[0])
            state = next_state
    feats, finals = torch.cat(feats), torch.cat(finals)  # step by step from the stored start state
    with torch.no_grad():
        b = trainer.sample_batch()
    torch.testing.assert_close(b["obs"], feats[2:8], atol=1e-5, rtol=1e-5)
    # successors: the next row's features, except where the episode was truncated (rows 4, 5, 6):
    # the features of that row's final_obs after its own obs
    expected = feats[3:9].clone()
    for t in (4, 5, 6):
        expected[t - 2] = finals[t]
    torch.testing.assert_close(b["next_obs"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["next_obs_target"], expected, atol=1e-5, rtol=1e-5)  # targets start equal
    assert b["reward"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert b["action"].tolist() == [0, 1, 0, 1, 0, 1]
    assert b["terminated"].tolist() == [False, True, False, False, False, False]
    run.close()


def test_memory_core_is_needed_and_used_on_a_cue_task(tmp_path):
    def run_with(memory: dict, sub: str) -> float:
        agent = {"name": "dqn", "gamma": 0.9, "lr": 3e-3, "learning_starts": 200, "batch_size": 64,
                 "train_every": 1, "utd": 0.5, "target_update_every": 100, "exploration_fraction": 0.3,
                 "exploration_final_eps": 0.02, "sequence_length": 4, "head_hidden": [32], "memory": memory}
        cfg = config_from_dict({
            "run": {"name": "cue", "total_steps": 3000, **QUIET, "eval_every": 0, "eval_episodes": 100},
            "env": {"backend": "gymnasium", "id": "toy_envs:CueEnv", "num_envs": 4, "vectorization": "sync"},
            "agent": agent,
        })
        torch.manual_seed(0)
        return train(cfg, tmp_path / sub)["evals"][-1]["mean"]

    with_memory = run_with(GRU, "gru")
    without = run_with({"name": "mlp", "hidden": [32], "activation": "relu"}, "mlp")
    assert with_memory >= 0.95, with_memory
    assert without <= 0.75, without


def test_td3_and_dqn_targets_by_hand():
    reward = torch.tensor([1.0, 2.0])
    terminated = torch.tensor([True, False])
    torch.testing.assert_close(td3_target(reward, terminated, torch.tensor([5.0, 5.0]), 0.9),
                               torch.tensor([1.0, 2.0 + 4.5]))
    online = torch.tensor([[1.0, 3.0], [4.0, 0.0]])
    target = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    # Double: the online net picks action 1 for row 0 (terminated: ignored) and 0 for row 1.
    torch.testing.assert_close(dqn_target(reward, terminated, online, target, 0.5, double=True),
                               torch.tensor([1.0, 2.0 + 15.0]))
    torch.testing.assert_close(dqn_target(reward, terminated, online, target, 0.5, double=False),
                               torch.tensor([1.0, 2.0 + 20.0]))


def _copy_sb3_td3_weights(agent, policy) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """Load SB3's TD3 networks into lifelong's (same layer layout); return the (ours, SB3's) pairs."""
    pairs = [(agent.actor.net, policy.actor.mu), (agent.q1.net, policy.critic.qf0), (agent.q2.net, policy.critic.qf1),
             (agent.actor_target.net, policy.actor_target.mu), (agent.q1_target.net, policy.critic_target.qf0),
             (agent.q2_target.net, policy.critic_target.qf1)]
    with torch.no_grad():
        for ours, theirs in pairs:
            for (name, p), (their_name, q) in zip(ours.state_dict().items(), theirs.state_dict().items()):
                assert name == their_name
                p.copy_(q)  # in place: the parameters stay views of the optimizers' flat buffers
    return pairs


def test_td3_update_equals_stable_baselines3_td3(tmp_path):
    """Six updates from the same weights, batches and noise draws give SB3's TD3 parameters.

    Covers critic loss, target policy smoothing, the delayed actor step, the Polyak step
    of all targets and Adam: what is left to differ between the two is collection.
    """
    import gymnasium as gym
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    hidden = [64, 48]
    cfg = config_from_dict({
        "run": {"name": "td3_vs_sb3", "total_steps": 1000, **QUIET},
        "env": {"backend": "gymnasium", "id": "HalfCheetah-v4", "num_envs": 1, "vectorization": "sync"},
        "agent": {"name": "td3", "lr": 1e-3, "memory": {"name": "mlp", "hidden": hidden, "activation": "relu"}},
    })
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    model = TD3("MlpPolicy", gym.make("HalfCheetah-v4"), learning_rate=1e-3, policy_kwargs={"net_arch": hidden},
                device="cpu", seed=0)
    model.set_logger(configure(None, []))
    pairs = _copy_sb3_td3_weights(trainer.agent, model.policy)
    g = torch.Generator().manual_seed(1)
    n = 32
    for i in range(6):
        obs, next_obs = torch.randn(n, 17, generator=g), torch.randn(n, 17, generator=g)
        action = torch.rand(n, 6, generator=g) * 2 - 1
        reward, terminated = torch.randn(n, generator=g), torch.rand(n, generator=g) < 0.2
        batch = {"obs": obs, "next_obs": next_obs, "next_obs_target": next_obs, "action": action, "reward": reward,
                 "terminated": terminated}
        trainer.sample_batch = lambda batch=batch: batch
        samples = ReplayBufferSamples(obs, action, next_obs, terminated.float()[:, None], reward[:, None], None)
        model.replay_buffer.sample = lambda batch_size, env=None, samples=samples: samples
        # The smoothing noise is the only random draw of an update, the same on both sides.
        torch.manual_seed(100 + i)
        trainer.update()
        torch.manual_seed(100 + i)
        model.train(gradient_steps=1, batch_size=n)
    assert trainer.updates == model._n_updates == 6
    for ours, theirs in pairs:
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    run.close()


def test_dqn_update_equals_stable_baselines3_dqn(tmp_path):
    """With ``double: false``, five updates from the same weights and batches give SB3's DQN parameters.

    Covers the max-target, the Huber loss, the gradient-norm clip and Adam (SB3 moves the
    target network outside ``train``, as lifelong does after collection).
    """
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    hidden = [32, 24]
    cfg = config_from_dict({
        "run": {"name": "dqn_vs_sb3", "total_steps": 1000, **QUIET},
        "env": {"backend": "gymnasium", "id": "CartPole-v1", "num_envs": 1, "vectorization": "sync"},
        # max_grad_norm 0.1 binds: the gradient norms of these updates are 0.2-0.4.
        "agent": {"name": "dqn", "lr": 2.3e-3, "double": False, "loss": "huber", "max_grad_norm": 0.1,
                  "memory": {"name": "mlp", "hidden": hidden, "activation": "relu"}},
    })
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=2.3e-3, max_grad_norm=0.1,
                policy_kwargs={"net_arch": hidden}, device="cpu", seed=0)
    model.set_logger(configure(None, []))
    agent, policy = trainer.agent, model.policy
    pairs = [(agent.q, policy.q_net.q_net), (agent.q_target, policy.q_net_target.q_net)]
    with torch.no_grad():
        for ours, theirs in pairs:
            for p, q in zip(ours.parameters(), theirs.parameters()):
                p.copy_(q)
        # A target apart from the online net, so a target taken from the wrong network shows.
        for p in agent.q_target.parameters():
            p.add_(0.05)
        for p in policy.q_net_target.parameters():
            p.add_(0.05)
    g = torch.Generator().manual_seed(2)
    n = 64
    for _ in range(5):
        obs, next_obs = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
        action = torch.randint(2, (n,), generator=g)
        reward, terminated = torch.randn(n, generator=g) * 3, torch.rand(n, generator=g) < 0.2
        batch = {"obs": obs, "next_obs": next_obs, "next_obs_target": next_obs, "action": action, "reward": reward,
                 "terminated": terminated}
        trainer.sample_batch = lambda batch=batch: batch
        samples = ReplayBufferSamples(obs, action[:, None], next_obs, terminated.float()[:, None], reward[:, None],
                                      None)
        model.replay_buffer.sample = lambda batch_size, env=None, samples=samples: samples
        trainer.update()
        model.train(gradient_steps=1, batch_size=n)
    for ours, theirs in pairs:
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    run.close()


def test_epsilon_schedule_is_linear_then_flat():
    assert linear_epsilon(0, 1000, 1.0, 0.1, 0.2) == 1.0
    assert linear_epsilon(100, 1000, 1.0, 0.1, 0.2) == pytest.approx(0.55)
    assert linear_epsilon(200, 1000, 1.0, 0.1, 0.2) == pytest.approx(0.1)
    assert linear_epsilon(900, 1000, 1.0, 0.1, 0.2) == pytest.approx(0.1)
    assert linear_epsilon(5, 1000, 1.0, 0.1, 0.0) == pytest.approx(0.1)


def test_update_schedule_counts_bursts_and_fractions(tmp_path):
    # 2 envs, learning from step 64, bursts every 10 env steps at 0.5 updates per step: the
    # iterations ending at steps 64, 66, ..., 400 gather 169 * 2 = 338 steps -> 33 bursts of
    # 5 updates (the last at step 392), and 8 steps wait for the next burst.
    agent = {**CHAIN_AGENTS["dqn"], "train_every": 10, "utd": 0.5}
    cfg = config_from_dict(chain_config(agent, total_steps=400, discrete=True))
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    trainer.train()
    assert trainer.updates == 33 * 5
    assert trainer._since_train == 8
    run.close()


def test_dqn_target_network_copies_every_n_env_steps(tmp_path):
    agent = {**CHAIN_AGENTS["dqn"], "target_update_every": 100}
    cfg = config_from_dict(chain_config(agent, total_steps=250, discrete=True))
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    q, target = trainer.agent.q, trainer.agent.q_target
    copies = []
    collect = trainer.after_collect

    def watched() -> None:
        before = target[0].weight.clone()
        collect()
        if not torch.equal(before, target[0].weight):
            copies.append(run.step)
            torch.testing.assert_close(target[0].weight, q[0].weight, rtol=0, atol=0)  # tau=1: a hard copy

    trainer.after_collect = watched
    trainer.train()
    assert copies == [100, 200] and trainer.updates > 150
    assert not torch.equal(q[0].weight, target[0].weight)  # learning went on after the last copy
    run.close()


@pytest.mark.parametrize("algo", ["td3", "dqn"])
def test_checkpoint_resume_restores_learner_and_replay(tmp_path, algo):
    agent = {**CHAIN_AGENTS[algo], "save_replay": True}
    cfg = config_from_dict(chain_config(agent, total_steps=300, discrete=algo == "dqn"))
    train(cfg, tmp_path)
    run, payload = Run.resume(tmp_path, ["run.total_steps=500"], logger=False)
    trainer = make_trainer(run.cfg, run)
    trainer.load_state_dict(payload["trainer"])
    saved = payload["trainer"]
    assert run.step == 300 and len(trainer.replay) == 300
    for key, value in trainer.agent.state_dict().items():
        torch.testing.assert_close(value, saved["learner"]["agent"][key])
    assert trainer.updates == saved["updates"] > 0
    run.close()
    results = train(resume=tmp_path, overrides=["run.total_steps=500"])
    assert results["steps"] == 500


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="agent.head_hidden"):
        load_config(ROOT / "configs/td3_halfcheetah.yaml", ["agent.memory={name: gru}", "agent.head_hidden=[0]"])
    with pytest.raises(ConfigError, match="agent.loss"):
        load_config(ROOT / "configs/dqn_cartpole.yaml", ["agent.loss=l1"])
    with pytest.raises(ConfigError, match="agent.exploration_final_eps"):
        load_config(ROOT / "configs/dqn_cartpole.yaml", ["agent.exploration_final_eps=1.5"])


def test_dqn_refuses_continuous_actions(tmp_path):
    cfg = config_from_dict(chain_config(CHAIN_AGENTS["dqn"], total_steps=100, discrete=False))
    run = Run.create(cfg, tmp_path, logger=False)
    with pytest.raises(ConfigError, match="not supported by dqn"):
        make_trainer(cfg, run)
    run.close()


@pytest.mark.slow
def test_dqn_solves_cartpole(tmp_path):
    cfg = load_config(ROOT / "configs/dqn_cartpole.yaml", ["run.progress=false", "run.checkpoint_every=0"])
    results = train(cfg, tmp_path)
    assert max(e["mean"] for e in results["evals"]) >= 475, results["evals"]


@pytest.mark.slow
def test_td3_solves_pendulum(tmp_path):
    cfg = config_from_dict({
        "run": {"name": "td3_pendulum", "total_steps": 15000, "eval_every": 1000, "eval_episodes": 10,
                "torch_threads": 1, "stop_return": -200, "progress": False, "checkpoint_every": 0},
        "env": {"backend": "gymnasium", "id": "Pendulum-v1", "num_envs": 1, "vectorization": "sync"},
        "agent": {"name": "td3", "learning_starts": 1000},
    })
    results = train(cfg, tmp_path)
    assert max(e["mean"] for e in results["evals"]) >= -200, results["evals"]


def test_offpolicy_agent_trains_under_a_curriculum_teacher(tmp_path):
    cfg = config_from_dict({
        "run": {"name": "dqn_curriculum", "total_steps": 1500, **QUIET},
        "env": {"backend": "native", "id": "GatedCorridor", "num_envs": 4},
        "agent": {"name": "dqn", "learning_starts": 200, "memory": {"name": "mlp", "hidden": [16]}},
        "curriculum": {"teacher": {"name": "alp_gmm"}, "test_set": [[0.1, 0.0], [0.5, 0.0]]},
    })
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    trainer.train()
    teacher = trainer.env.teacher
    assert teacher.episodes >= 20  # every ended episode was reported
    state = trainer.state_dict()
    assert state["env"]["curriculum"]["episodes"] == teacher.episodes  # the teacher is checkpointed
    run.close()
