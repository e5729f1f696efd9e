"""Batched env layer: same-step autoreset on every backend and mode, episode stats, normalisers, check_env."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import toy_envs
from lifelong.config import ConfigError, EnvConfig
from lifelong.envs import Step, VecEnv, check_env, make_env
from lifelong.envs.wrappers import EpisodeStats, NormalizeObs, ScaleReward

TOY = "toy_envs:FixedLengthEnv"


def toy_cfg(**kw) -> EnvConfig:
    kw.setdefault("num_envs", 2)
    return EnvConfig(backend="gymnasium", id=TOY, **kw)


def chain(env: VecEnv) -> list[type]:
    """The wrapper classes from the outside in, ending with the backend class."""
    out = []
    while True:
        out.append(type(env))
        if not hasattr(env, "env"):
            return out
        env = env.env


# ------------------------------------------------------------------ toy env reference


class ToyReference:
    """What one FixedLengthEnv seeded with ``seed`` must produce under same-step autoreset."""

    def __init__(self, seed: int) -> None:
        self.seed, self.episode, self.t = seed, 0, 0
        self.ret, self.length = 0.0, 0

    def obs(self) -> list[float]:
        return [self.seed, self.episode, self.t]

    def step(self, action: int) -> dict:
        self.t += 1
        reward = action + 0.5
        self.ret += reward
        self.length += 1
        end = self.t >= toy_envs.episode_length(self.seed, self.episode)
        even = self.episode % 2 == 0
        out = dict(final_obs=self.obs(), reward=reward, terminated=end and even, truncated=end and not even)
        out.update(ep_return=self.ret, ep_length=self.length)
        if end:
            self.episode, self.t, self.ret, self.length = self.episode + 1, 0, 0.0, 0
        out["obs"] = self.obs()
        return out


def run_toy(cfg: EnvConfig, seed: int, steps: int) -> list[Step]:
    env = make_env(cfg, seed=seed)
    try:
        first = env.reset()
        assert first.tolist() == [[seed + i, 0, 0] for i in range(cfg.num_envs)]
        out = []
        for t in range(steps):
            action = torch.tensor([(t + i) % 2 for i in range(cfg.num_envs)], dtype=torch.int64)
            out.append(env.step(action))
        return out
    finally:
        env.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
@pytest.mark.parametrize("autoreset_mode", ["same_step", "next_step", "disabled"])
def test_gymnasium_same_step_contract(vectorization: str, autoreset_mode: str) -> None:
    seed, steps = 5, 24
    cfg = toy_cfg(num_envs=2, vectorization=vectorization, autoreset_mode=autoreset_mode)
    refs = [ToyReference(seed + i) for i in range(cfg.num_envs)]
    ended = {"terminated": 0, "truncated": 0}
    for t, step in enumerate(run_toy(cfg, seed, steps)):
        assert step.obs.dtype == torch.float32 and step.obs.shape == (2, 3)
        assert step.reward.dtype == torch.float32 and step.reward.shape == (2,)
        for flag in (step.terminated, step.truncated, step.is_first):
            assert flag.dtype == torch.bool and flag.shape == (2,)
        episode = step.info["episode"]
        for i, ref in enumerate(refs):
            want = ref.step((t + i) % 2)
            assert step.obs[i].tolist() == want["obs"], (t, i)
            assert step.final_obs[i].tolist() == want["final_obs"], (t, i)
            assert step.reward[i].item() == want["reward"]
            assert step.terminated[i].item() == want["terminated"]
            assert step.truncated[i].item() == want["truncated"]
            done = want["terminated"] or want["truncated"]
            assert step.is_first[i].item() == done
            assert episode["done"][i].item() == done
            if done:
                assert episode["return"][i].item() == want["ep_return"]
                assert episode["length"][i].item() == want["ep_length"]
                ended["terminated" if want["terminated"] else "truncated"] += 1
    assert ended["terminated"] >= 2 and ended["truncated"] >= 2


def test_autoreset_modes_give_identical_steps() -> None:
    modes = ("same_step", "next_step", "disabled")
    runs = {mode: run_toy(toy_cfg(num_envs=3, autoreset_mode=mode), 11, 20) for mode in modes}
    base = runs.pop("same_step")
    for mode, steps in runs.items():
        for a, b in zip(base, steps, strict=True):
            for name in ("obs", "reward", "terminated", "truncated", "is_first", "final_obs"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (mode, name)
            for key in ("done", "return", "length"):
                assert torch.equal(a.info["episode"][key], b.info["episode"][key]), (mode, key)


def test_reset_seeds_env_i_with_seed_plus_i_and_repeats() -> None:
    env = make_env(toy_cfg(num_envs=3), seed=0)
    assert env.reset().tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    env.step(torch.zeros(3, dtype=torch.int64))
    assert env.reset(seed=40).tolist() == [[40, 0, 0], [41, 0, 0], [42, 0, 0]]
    # a reset without seed starts the next episode of each env's own stream
    assert env.reset().tolist() == [[40, 1, 0], [41, 1, 0], [42, 1, 0]]
    env.close()


def test_box_actions_are_clipped_and_discrete_obs_one_hot() -> None:
    env = make_env(EnvConfig(backend="gymnasium", id="toy_envs:EchoActionEnv", num_envs=2), seed=0)
    env.reset()
    step = env.step(torch.tensor([[5.0, -5.0], [0.25, -0.5]]))
    assert step.obs.tolist() == [[1.0, -1.0], [0.25, -0.5]]
    env.close()

    env = make_env(EnvConfig(backend="gymnasium", id="toy_envs:DiscreteEchoEnv", num_envs=2), seed=0)
    assert env.observation_space.shape == (5,)
    assert env.reset().tolist() == [[1, 0, 0, 0, 0]] * 2
    # action indices 0..n-1; the backend adds Discrete(3, start=2).start
    step = env.step(torch.tensor([0, 2]))
    assert step.obs.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    env.close()


def test_envpool_box_actions_are_clipped() -> None:
    env = make_env(EnvConfig(backend="envpool", id="Pendulum-v1", num_envs=2), seed=4)
    pool = env.unwrapped._env
    sent = []

    class Recorder:
        def step(self, action: np.ndarray):
            sent.append(action.copy())
            return pool.step(action)

        def reset(self, *args):
            return pool.reset(*args)

    env.unwrapped._env = Recorder()
    env.reset()
    step = env.step(torch.tensor([[7.0], [-0.5]]))  # Pendulum-v1 torque bounds are [-2, 2]
    assert sent[0].tolist() == [[2.0], [-0.5]] and sent[0].dtype == np.float32
    assert step.obs.shape == (2, 3) and step.obs.dtype == torch.float32
    env.unwrapped._env = pool
    env.close()


# ------------------------------------------------------------------------ CartPole

THETA_LIMIT = 12 * 2 * math.pi / 360


def cartpole_dynamics(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Gymnasium/EnvPool CartPole physics (Euler) for a batch of states [B, 4] and actions [B]."""
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass, polemass_length = masscart + masspole, masspole * length
    x, x_dot, theta, theta_dot = state.astype(np.float64).T
    force = np.where(action == 1, force_mag, -force_mag)
    cos, sin = np.cos(theta), np.sin(theta)
    temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
    theta_acc = (gravity * sin - cos * temp) / (length * (4.0 / 3.0 - masspole * cos**2 / total_mass))
    x_acc = temp - polemass_length * theta_acc * cos / total_mass
    return np.stack(
        [x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc], axis=1
    )


@pytest.mark.parametrize("backend", ["envpool", "gymnasium"])
def test_cartpole_contract(backend: str) -> None:
    num_envs, steps, limit = 4, 120, 20
    cfg = EnvConfig(backend=backend, id="CartPole-v1", num_envs=num_envs, max_episode_steps=limit)
    env = make_env(cfg, seed=3)
    actions = np.random.default_rng(0).integers(0, 2, (steps, num_envs))
    prev = env.reset().numpy()
    assert np.abs(prev).max() <= 0.05
    counted = np.zeros(num_envs, dtype=np.int64)
    n_term = n_trunc = 0
    for t in range(steps):
        step = env.step(torch.from_numpy(actions[t]))
        obs, final = step.obs.numpy(), step.final_obs.numpy()
        term, trunc = step.terminated.numpy(), step.truncated.numpy()
        done = term | trunc
        counted += 1
        np.testing.assert_allclose(final, cartpole_dynamics(prev, actions[t]), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(step.is_first.numpy(), done)
        np.testing.assert_array_equal(obs[~done], final[~done])
        assert np.abs(obs[done]).max(initial=0.0) <= 0.05  # fresh reset states
        fell = (np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > THETA_LIMIT)
        if backend == "envpool":
            # EnvPool reports a fall on the time limit's last step as truncated only (terminated = done & ~trunc)
            fell &= counted < limit
        np.testing.assert_array_equal(term, fell)
        # the time limit truncates exactly at `limit` steps (also flagging it on a terminal step is allowed)
        np.testing.assert_array_equal(trunc[~term], counted[~term] == limit)
        assert (counted <= limit).all()
        np.testing.assert_array_equal(step.reward.numpy(), np.ones(num_envs, np.float32))
        episode = step.info["episode"]
        np.testing.assert_array_equal(episode["done"].numpy(), done)
        np.testing.assert_array_equal(episode["length"].numpy()[done], counted[done])
        np.testing.assert_array_equal(episode["return"].numpy()[done], counted[done])
        n_term += int(term.sum())
        n_trunc += int((trunc & ~term).sum())
        counted[done] = 0
        prev = obs
    env.close()
    assert n_term >= 3 and n_trunc >= 3, (n_term, n_trunc)


@pytest.mark.parametrize("backend", ["envpool", "gymnasium"])
def test_cartpole_reset_seed_is_deterministic(backend: str) -> None:
    env = make_env(EnvConfig(backend=backend, id="CartPole-v1", num_envs=3), seed=7)
    first = env.reset()
    for _ in range(5):
        env.step(torch.ones(3, dtype=torch.int64))
    assert torch.equal(env.reset(seed=7), first)
    assert torch.equal(env.reset(seed=7), first)
    other = env.reset(seed=8)
    assert not torch.equal(other, first)
    assert torch.equal(other[:2], first[1:])  # env i is seeded with seed + i
    env.close()


# -------------------------------------------------------------------------- errors


def test_unknown_envpool_id_suggests_and_points_to_gymnasium() -> None:
    with pytest.raises(ConfigError) as err:
        make_env(EnvConfig(backend="envpool", id="CartPol-v1"), seed=0)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("env.id:")
    assert "'CartPol-v1'" in msg and "'CartPole-v1'" in msg and "env.backend=gymnasium" in msg


def test_unknown_gymnasium_id_suggests_and_hints_import() -> None:
    with pytest.raises(ConfigError) as err:
        make_env(EnvConfig(backend="gymnasium", id="Pendulm-v1"), seed=0)
    msg = str(err.value)
    assert "\n" not in msg and "'Pendulum-v1'" in msg and "env.import" in msg and "module.path:ClassName" in msg


def test_missing_class_bad_import_and_bad_kwargs() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'toy_envs:FixedLengthEnv'"):
        make_env(EnvConfig(backend="gymnasium", id="toy_envs:FixedLenghtEnv"), seed=0)
    with pytest.raises(ConfigError, match=r"^env.import: cannot import module 'no_such_module_xyz'"):
        make_env(EnvConfig(backend="gymnasium", id="CartPole-v1", import_="no_such_module_xyz"), seed=0)
    with pytest.raises(ConfigError, match=r"^env.id: cannot import module 'no_such_module_xyz'"):
        make_env(EnvConfig(backend="gymnasium", id="no_such_module_xyz:Env"), seed=0)
    with pytest.raises(ConfigError, match=r"^env.kwargs: .*accepted keys: .*max_episode_steps"):
        make_env(EnvConfig(backend="envpool", id="CartPole-v1", kwargs={"bogus": 1}), seed=0)
    with pytest.raises(ConfigError, match=r"^env.kwargs: constructing 'CartPole-v1'"):
        make_env(EnvConfig(backend="gymnasium", id="CartPole-v1", kwargs={"bogus": 1}), seed=0)
    with pytest.raises(ConfigError, match=r"unusable observation space: Dict spaces are not supported"):
        make_env(EnvConfig(backend="gymnasium", id="toy_envs:DictObsEnv"), seed=0)
    with pytest.raises(KeyError, match=r"env.backend: unknown value 'envpol'; did you mean 'envpool'"):
        make_env(EnvConfig(backend="envpol"), seed=0)


# ---------------------------------------------------------------------- normalisers


def pooled_with_prior(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of ``data [N, ...]`` pooled with the 1e-4-count prior (mean 0, var 1)."""
    prior, n = 1e-4, data.shape[0]
    mean = data.sum(0) / (prior + n)
    return mean, (prior * 1.0 + (data**2).sum(0)) / (prior + n) - mean**2


def test_normalize_obs_statistics_final_obs_and_clip() -> None:
    cfg = toy_cfg(num_envs=2, normalize_obs=True, clip_obs=1.5)
    env, raw = make_env(cfg, seed=3), make_env(toy_cfg(num_envs=2), seed=3)
    assert chain(env)[:2] == [NormalizeObs, EpisodeStats]
    seen = [raw.reset().double()]
    env.reset()
    ended = False
    for t in range(12):
        action = torch.tensor([t % 2, 1])
        step, ref = env.step(action), raw.step(action)
        seen.append(ref.obs.double())
        data = torch.cat(seen)
        rms = env.obs_rms
        want_mean, want_var = pooled_with_prior(data)
        torch.testing.assert_close(rms.mean, want_mean)
        torch.testing.assert_close(rms.var, want_var)
        mean, std = rms.mean.float(), (rms.var.float() + 1e-8).sqrt()
        torch.testing.assert_close(step.obs, ((ref.obs - mean) / std).clamp(-1.5, 1.5))
        torch.testing.assert_close(step.final_obs, ((ref.final_obs - mean) / std).clamp(-1.5, 1.5))
        ended |= bool(ref.is_first.any())
        # rewards and the episode tracker are untouched by observation normalisation
        torch.testing.assert_close(step.reward, ref.reward)
        torch.testing.assert_close(step.info["episode"]["return"], ref.info["episode"]["return"])
    assert ended
    assert (step.obs.abs() <= 1.5).all() and (step.obs.abs() == 1.5).any()


def test_normalizer_state_dict_round_trip_and_frozen_eval_env() -> None:
    cfg = toy_cfg(num_envs=2, normalize_obs=True, normalize_reward=True)
    env = make_env(cfg, seed=1)
    assert chain(env)[:3] == [ScaleReward, NormalizeObs, EpisodeStats]
    env.reset()
    for t in range(10):
        env.step(torch.tensor([t % 2, 0]))
    state = env.state_dict()
    assert set(state) == {"obs_rms", "return_rms"}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    fresh = make_env(cfg, seed=9)
    fresh.load_state_dict(loaded)
    for key in state:
        for name in ("mean", "var"):
            assert torch.equal(fresh.state_dict()[key][name], state[key][name])
        assert fresh.state_dict()[key]["count"] == state[key]["count"]

    evaluation = make_env(cfg, seed=2, training=False)
    assert ScaleReward not in chain(evaluation)  # evaluation rewards stay raw
    evaluation.load_state_dict(loaded)  # the training env's extra return_rms entry is ignored
    before = evaluation.state_dict()
    obs = evaluation.reset()
    mean, std = state["obs_rms"]["mean"].float(), (state["obs_rms"]["var"].float() + 1e-8).sqrt()
    torch.testing.assert_close(obs, ((torch.tensor([[2.0, 0, 0], [3, 0, 0]]) - mean) / std).clamp(-10, 10))
    for t in range(6):
        step = evaluation.step(torch.tensor([1, 1]))
        assert step.reward.tolist() == [1.5, 1.5]
    after = evaluation.state_dict()
    assert torch.equal(after["obs_rms"]["mean"], before["obs_rms"]["mean"])
    assert torch.equal(after["obs_rms"]["var"], before["obs_rms"]["var"])
    assert after["obs_rms"]["count"] == before["obs_rms"]["count"]

    # set_training(False) freezes a training env too
    env.set_training(False)
    frozen = env.state_dict()
    env.step(torch.tensor([1, 1]))
    assert env.state_dict()["return_rms"]["count"] == frozen["return_rms"]["count"]
    assert env.state_dict()["obs_rms"]["count"] == frozen["obs_rms"]["count"]
    with pytest.raises(KeyError, match="obs_rms"):
        fresh.load_state_dict({"return_rms": state["return_rms"]})


class ScriptedEnv(VecEnv):
    """Two envs with scripted rewards and episode ends."""

    def __init__(self, rewards: list[list[float]], dones: list[list[bool]]) -> None:
        import gymnasium as gym

        self.num_envs, self.device = 2, torch.device("cpu")
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.rewards, self.dones, self.t = rewards, dones, 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return torch.zeros(2, 1)

    def step(self, action: torch.Tensor) -> Step:
        r = torch.tensor(self.rewards[self.t], dtype=torch.float32)
        d = torch.tensor(self.dones[self.t])
        self.t += 1
        obs = torch.zeros(2, 1)
        return Step(obs, r, d, torch.zeros(2, dtype=torch.bool), d, obs, {})


def test_scale_reward_hand_computed() -> None:
    rewards = [[1.0, 2.0], [3.0, 0.0], [100.0, -1.0]]
    dones = [[False, True], [False, False], [False, False]]
    env = ScaleReward(EpisodeStats(ScriptedEnv(rewards, dones)), gamma=0.5, clip=2.5)
    env.reset()
    # discounted returns R <- 0.5 R + r, restarted after env 1's episode ends at t=0:
    # t0: [1, 2]   t1: [0.5*1 + 3, 0 + 0] = [3.5, 0]   t2: [1.75 + 100, -1]
    returns = [[1.0, 2.0], [3.5, 0.0], [101.75, -1.0]]
    for t in range(3):
        step = env.step(torch.zeros(2, dtype=torch.int64))
        # population std of every return so far, pooled with the 1e-4 prior sample (mean 0, var 1)
        _, var = pooled_with_prior(torch.tensor(returns[: t + 1], dtype=torch.float64).reshape(-1))
        std = math.sqrt(var.item())
        want = np.clip(np.array(rewards[t]) / std, -2.5, 2.5)
        np.testing.assert_allclose(step.reward.numpy(), want, rtol=1e-6)
        # the episode tracker below sees raw rewards
        assert step.info["episode"]["return"].tolist()[0] == sum(r[0] for r in rewards[: t + 1])
    assert step.reward[0].item() == 2.5  # 100 / 37.6 clipped
    env.set_training(False)
    count = env.return_rms.count
    env.unwrapped.t = 0  # replay the script
    env.step(torch.zeros(2, dtype=torch.int64))
    assert env.return_rms.count == count


# ------------------------------------------------------------------------ check_env


def test_check_env_passes_good_envs() -> None:
    assert check_env("CartPole-v1") == []
    assert check_env(TOY) == []
    assert check_env("toy_envs:EchoActionEnv") == []
    assert check_env("Pendulum-v1", kwargs={"g": 9.81}) == []


@pytest.mark.parametrize(
    "name, expected",
    [
        ("RaisesOnInit", "raised RuntimeError: simulator licence not found"),
        ("ResetWithoutSeed", "lacks the keyword argument(s) 'seed', 'options'"),
        ("ResetReturnsObsOnly", "expected a tuple (obs, info)"),
        ("NoObservationSpace", "observation_space is missing"),
        ("ActionSpaceNotSpace", "action_space is (0, 1) of type tuple, not a gymnasium.spaces.Space"),
        ("UnsupportedActionSpace", "MultiDiscrete spaces are not supported"),
        ("DictObsEnv", "Dict spaces are not supported"),
        ("InvertedBoxBounds", "low > high at index (1,) (low=200.0, high=100.0)"),
        ("NaNBoxBounds", "NaN in high at index (2,)"),
        ("WrongObsDtype", "has dtype float64 but observation_space has dtype float32"),
        ("WrongObsShape", "has shape (4,) but observation_space has shape (3,)"),
        ("ObsOutOfBounds", "outside observation_space bounds at index (0,): -1.0 not in [0.0, inf]"),
        ("FourTupleStep", "returned a 4-tuple; expected the 5-tuple"),
        ("ArrayReward", "expected a real scalar"),
        ("IntDoneFlags", "terminated=0 of type int; expected a bool"),
        ("InfoNotDict", "info of type list; expected a dict"),
        ("NondeterministicReset", "expected the same observation for the same seed"),
        ("StepRaises", "raised ValueError: physics exploded"),
    ],
)
def test_check_env_reports_each_defect(name: str, expected: str) -> None:
    problems = check_env(f"toy_envs:{name}")
    assert problems, name
    assert any(expected in p for p in problems), problems
    assert len(problems) <= 2, problems  # one defect, one (or two closely related) messages


def test_check_env_bad_target() -> None:
    (msg,) = check_env("CartPol-v1")
    assert "did you mean 'CartPole-v1'" in msg
    (msg,) = check_env("CartPole-v1", import_module="no_such_module_xyz")
    assert msg.startswith("env.import: cannot import module 'no_such_module_xyz'")
    (msg,) = check_env("CartPole-v1", kwargs={"bogus": 1})
    assert "constructing 'CartPole-v1'" in msg and "bogus" in msg
