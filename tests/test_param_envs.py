"""Parameterized envs: the pending/current params contract on every backend, the parameterized native tasks,
CueRecall and Stump Tracks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lifelong.config import ConfigError, EnvConfig
from lifelong.envs import make_env
from lifelong.envs.native import TASKS, make_task
from lifelong.envs.native.parameterized import GatedCorridor
from lifelong.envs.params import ParamSpace

ROOT = Path(__file__).resolve().parent.parent


class ParamLengthEnv(gym.Env):
    """Observation ``[length, bonus, t]``; an episode lasts ``rint(length)`` steps, each rewarding ``bonus``.

    Declares its parameter space as a plain dict, as a user's env may.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    param_space = {"names": ["length", "bonus"], "low": [1.0, 0.0], "high": [6.0, 10.0]}
    default_params = [3.0, 1.0]

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, np.inf, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.params = np.array(self.default_params, np.float32)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.params[0], self.params[1], self.t], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options is not None and "params" in options:
            self.params = np.asarray(options["params"], np.float32)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), float(self.params[1]), bool(self.t >= np.rint(self.params[0])), False, {}


TOY = "test_param_envs:ParamLengthEnv"


def toy_env(num_envs: int = 3, **kw: Any):
    return make_env(EnvConfig(backend="gymnasium", id=TOY, num_envs=num_envs, **kw), seed=0)


def toy_length(params: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.rint(params[:, 0].numpy())).long()


def deck_length(params: torch.Tensor) -> torch.Tensor:
    """Episode length of ParamRepeatPrevious: all N cards dealt in N - 1 steps."""
    return (params[:, 1] / 4).round().long() * 4 - 1


def uniform(space: ParamSpace, gen: torch.Generator) -> Callable[[int], torch.Tensor]:
    low, high = space.low_tensor(), space.high_tensor()
    return lambda n: low + torch.rand(n, space.dim, generator=gen) * (high - low)


def short_decks(gen: torch.Generator) -> Callable[[int], torch.Tensor]:
    """ParamRepeatPrevious params with decks of 36 or 40 cards (35- or 39-step episodes), any k."""
    def sample(n: int) -> torch.Tensor:
        k = 1 + torch.rand(n, generator=gen) * 31
        deck = 36 + 4 * torch.randint(0, 2, (n,), generator=gen).float()
        return torch.stack([k, deck], -1)
    return sample


def native_env(masked: bool, num_envs: int = 4):
    env = make_env(EnvConfig(backend="native", id="ParamRepeatPrevious", num_envs=num_envs), seed=0)
    env.unwrapped.masked_reset = masked
    return env


ENVS = {
    "native": (lambda: native_env(False), deck_length, short_decks, 160),
    "native-masked": (lambda: native_env(True), deck_length, short_decks, 160),
    **{
        f"gym-{vec}-{mode}": (lambda vec=vec, mode=mode: toy_env(vectorization=vec, autoreset_mode=mode),
                              toy_length, None, 60)
        for vec in ("sync", "async") for mode in ("same_step", "next_step", "disabled")
    },
}


# ------------------------------------------------------------------ the contract


@pytest.mark.parametrize("name", list(ENVS))
def test_params_set_at_any_time_apply_at_each_rows_next_episode_start(name):
    """A model of pending/current params per row predicts every reported episode: its params and its length."""
    make, length_of, sampler, steps = ENVS[name]
    env = make()
    gen = torch.Generator().manual_seed(1)
    sample = sampler(gen) if sampler else uniform(env.param_space, gen)
    B = env.num_envs
    pending = sample(B)
    env.set_params(pending)
    current = pending.clone()
    obs = env.reset()
    if name.startswith("gym"):  # the toy shows its params: the sub-envs really got them
        assert torch.equal(obs[:, :2], current)
    ended = 0
    for t in range(steps):
        draw = torch.rand((), generator=gen).item()
        if draw < 0.2:  # a bool mask of rows
            mask = torch.rand(B, generator=gen) < 0.5
            new = sample(int(mask.sum()))
            env.set_params(new, rows=mask)
            pending[mask] = new
        elif draw < 0.3:  # int indices
            rows = torch.randperm(B, generator=gen)[:2]
            new = sample(2)
            env.set_params(new, rows=rows)
            pending[rows] = new
        elif draw < 0.35:  # every row
            pending = sample(B)
            env.set_params(pending)
        step = env.step(torch.zeros(B, dtype=torch.int64))
        ep = step.info["episode"]
        done = ep["done"]
        assert torch.equal(ep["params"], current), t  # ended rows: the ended episode's; others: the running one
        assert torch.equal(ep["length"][done], length_of(current[done])), t
        current[done] = pending[done]
        assert torch.equal(env.current_params, current), t
        if name.startswith("gym"):
            assert torch.equal(step.obs[done, :2], current[done])
            assert torch.allclose(ep["return"][done], ep["length"][done] * ep["params"][done, 1].double())
        ended += int(done.sum())
    assert ended >= 3 * B
    env.close()


@pytest.mark.parametrize("name", ["native", "gym-sync-same_step", "gym-async-next_step"])
def test_teacher_flow_runs_every_sampled_vector_once_in_order(name):
    """The documented teacher loop: each sampled vector is used by exactly one episode of its row, in order."""
    make, length_of, _, steps = ENVS[name]
    env = make()
    B = env.num_envs
    serial = iter(range(10_000))
    sampled: list[list[int]] = [[] for _ in range(B)]
    reported: list[list[int]] = [[] for _ in range(B)]

    def teacher_sample(rows: torch.Tensor) -> torch.Tensor:
        """Vectors whose first coordinate's fraction (ignored by the env's rounding) is a serial number."""
        out = []
        for row in rows.tolist():
            i = next(serial)
            sampled[row].append(i)
            if name == "native":
                out.append([1.0 + i * 1e-3, 36.0 + 4 * (i % 2)])
            else:
                out.append([2.0 + (i % 3) + i * 1e-4, 1.0])
        return torch.tensor(out)

    def serial_of(params: torch.Tensor) -> list[int]:
        base = 1.0 if name == "native" else 2.0 + torch.remainder(torch.round(params[:, 0] - 2.0), 3)
        scale = 1e-3 if name == "native" else 1e-4
        return torch.round((params[:, 0] - base) / scale).long().tolist()

    everyone = torch.arange(B)
    env.set_params(teacher_sample(everyone))
    env.reset()
    env.set_params(teacher_sample(everyone))  # the second episode of every row
    for _ in range(steps):
        step = env.step(torch.zeros(B, dtype=torch.int64))
        ep = step.info["episode"]
        done = ep["done"]
        if done.any():
            rows = done.nonzero().squeeze(1)
            for row, i in zip(rows.tolist(), serial_of(ep["params"][done])):
                reported[row].append(i)
            assert torch.equal(ep["length"][done], length_of(ep["params"][done]))
            env.set_params(teacher_sample(rows), rows=done)
    for row in range(B):
        assert len(reported[row]) >= 2
        # every vector sampled for the row ran, in order; the last two are still to come (running and pending)
        assert reported[row] == sampled[row][: len(reported[row])]
        assert len(sampled[row]) == len(reported[row]) + 2
    env.close()


def test_params_pass_through_every_wrapper_and_stay_until_replaced():
    env = make_env(EnvConfig(backend="native", id="GatedCorridor", num_envs=2, normalize_obs=True,
                             normalize_reward=True), seed=0)
    assert env.param_space == GatedCorridor.param_space
    assert torch.equal(env.current_params, torch.tensor([[0.1, 0.0]] * 2))  # the task's defaults
    env.set_params(torch.tensor([[0.0, 0.0], [0.0, 0.9]]))
    env.reset()
    for _ in range(3):  # target 1 cell away: every step ends an episode; the params stay
        step = env.step(torch.ones(2, dtype=torch.int64))
        assert step.info["episode"]["done"].all()
        assert torch.equal(step.info["episode"]["params"], torch.tensor([[0.0, 0.0], [0.0, 0.9]]))
        assert step.info["episode"]["return"].tolist() == [1.0 - 0.5 / 64, 0.0]
    env.set_params(None, rows=torch.tensor([0]))  # back to the default for row 0
    env.step(torch.ones(2, dtype=torch.int64))
    assert torch.equal(env.current_params, torch.tensor([[0.1, 0.0], [0.0, 0.9]]))


def test_kwargs_params_set_every_envs_default():
    env = make_env(EnvConfig(backend="native", id="ParamRepeatPrevious", num_envs=2,
                             kwargs={"params": [2, 40]}), seed=0)
    assert env.current_params.tolist() == [[2.0, 40.0]] * 2
    env.reset()
    for _ in range(39):
        step = env.step(torch.zeros(2, dtype=torch.int64))
    assert step.done.all() and step.info["episode"]["length"].tolist() == [39, 39]


@pytest.mark.parametrize(
    "params, rows, fragment",
    [
        ([[2.0, 40.0], [2.0, 200.0]], None, "params: row 1 has deck_size=200.0, outside [36.0, 156.0]"),
        ([[0.0, 40.0], [2.0, 40.0]], None, "params: row 0 has k=0.0, outside [1.0, 32.0]"),
        ([[2.0, float("nan")], [2.0, 40.0]], None, "params: row 0 has deck_size=nan, outside [36.0, 156.0]"),
        ([[2.0, 40.0, 1.0], [2.0, 40.0, 1.0]], None, "params: expected shape [2, 2] (k, deck_size), got [2, 3]"),
        ([[2.0, 40.0]], None, "params: expected shape [2, 2]"),
        ([[2.0, 40.0]], [True, True], "params: expected shape [2, 2]"),
        ([[2.0, 40.0]], [0, 2], "rows: indices must lie in 0..1"),
        ([[2.0, 40.0]], [True], "rows: a bool mask must have shape [2]"),
    ],
)
def test_bad_params_give_one_line_errors(params, rows, fragment):
    env = make_env(EnvConfig(backend="native", id="ParamRepeatPrevious", num_envs=2), seed=0)
    before = env.current_params.clone()
    with pytest.raises(ValueError) as info:
        env.set_params(torch.tensor(params), rows=None if rows is None else torch.tensor(rows))
    assert fragment in str(info.value) and "\n" not in str(info.value)
    env.reset()
    assert torch.equal(env.current_params, before)  # nothing was half-set


def test_bad_params_from_config_and_envs_without_params():
    with pytest.raises(ConfigError, match=r"^env.kwargs: native task 'GatedCorridor': .*distance=2.0, outside"):
        make_env(EnvConfig(backend="native", id="GatedCorridor", kwargs={"params": [2.0, 0.0]}), seed=0)
    with pytest.raises(ConfigError, match="does not accept params"):
        make_env(EnvConfig(backend="native", id="CueRecallEasy", kwargs={"params": [1.0]}), seed=0)
    plain = [
        make_env(EnvConfig(backend="native", id="CartPole", num_envs=2), seed=0),
        make_env(EnvConfig(backend="gymnasium", id="CartPole-v1", num_envs=2), seed=0),
        make_env(EnvConfig(backend="envpool", id="CartPole-v1", num_envs=2), seed=0),
    ]
    for env in plain:
        assert env.param_space is None and env.current_params is None
        with pytest.raises(ValueError, match="takes no parameters") as info:
            env.set_params(torch.zeros(2, 1))
        assert "\n" not in str(info.value)
        env.reset()
        assert "params" not in env.step(torch.zeros(2, dtype=torch.int64)).info["episode"]
        env.close()
    env = toy_env(2)
    assert env.param_space == ParamSpace(("length", "bonus"), (1.0, 0.0), (6.0, 10.0))
    with pytest.raises(ValueError, match=r"row 1 has bonus=11.0, outside \[0.0, 10.0\]"):
        env.set_params(torch.tensor([[2.0, 1.0], [2.0, 11.0]]))
    env.close()


def test_gymnasium_env_with_a_malformed_param_space_is_a_config_error(monkeypatch):
    monkeypatch.setattr(ParamLengthEnv, "param_space", {"names": ["a"], "low": [0.0]})
    with pytest.raises(ConfigError, match="param_space .* expected a lifelong ParamSpace or a dict"):
        toy_env(2)


# ------------------------------------------------------------------ ParamCartPole


def test_param_cartpole_with_default_params_is_cartpole():
    plain, param = make_task("CartPole", 64, seed=3), make_task("ParamCartPole", 64, seed=3)
    assert torch.equal(plain.reset(), param.reset())
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        action = torch.randint(0, 2, (64,), generator=gen)
        a, b = plain.step(action), param.step(action)
        assert torch.equal(a.obs, b.obs) and torch.equal(a.terminated, b.terminated)
        assert torch.equal(a.truncated, b.truncated) and torch.equal(a.reward, b.reward)


def test_param_cartpole_one_step_by_hand():
    """Pole at 0.1 rad, cart pushed left (action 0): theta_ddot = (g sin - cos F/M) / (l (4/3 - m cos^2 / M))."""
    params = torch.tensor([[9.8, 0.5, 1.0], [9.8, 2.0, 1.0], [4.0, 0.5, 1.0], [9.8, 0.5, 5.0]])
    env = make_task("ParamCartPole", 4, seed=0, dtype="float64")
    env.set_params(params)
    env.reset()
    zero = torch.zeros(4, dtype=torch.float64)
    env.state.update(x=zero, x_dot=zero, theta=torch.full((4,), 0.1, dtype=torch.float64), theta_dot=zero)
    env.step(torch.zeros(4, dtype=torch.int64))
    expected = []
    for g, half, mc in params.double().tolist():
        total = 0.1 + mc
        temp = -10.0 / total
        acc = (g * math.sin(0.1) - math.cos(0.1) * temp) / (half * (4 / 3 - 0.1 * math.cos(0.1) ** 2 / total))
        expected.append(0.02 * acc)
    theta_dot = env.state["theta_dot"].tolist()
    assert theta_dot == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.02 * 16.1, rel=1e-2)  # the pole falls right at ~16 rad/s^2
    # a 4x longer pole falls ~4x slower; weaker gravity slower; a heavier cart is pushed less
    assert theta_dot[1] == pytest.approx(theta_dot[0] / 4, rel=1e-3)
    assert theta_dot[2] < theta_dot[0] and theta_dot[3] < theta_dot[0]
    assert env.state["theta"].tolist() == [0.1] * 4  # Euler: the angle moves with the old velocity (0)


# ------------------------------------------------------------ ParamRepeatPrevious


@pytest.mark.parametrize("k, decks", [(4, 1), (32, 2)])
def test_param_repeat_previous_equals_repeat_previous(k, decks):
    plain = make_task("RepeatPrevious", 8, seed=5, num_decks=decks, k=k)
    param = make_task("ParamRepeatPrevious", 8, seed=5, params=[k, 52 * decks])
    assert torch.equal(plain.reset(), param.reset())
    gen = torch.Generator().manual_seed(0)
    for _ in range(2 * 52 * decks + 10):
        action = torch.randint(0, 4, (8,), generator=gen)
        a, b = plain.step(action), param.step(action)
        assert torch.equal(a.obs, b.obs) and torch.equal(a.done, b.done)
        assert torch.allclose(a.reward, b.reward, rtol=0, atol=1e-7)


def test_param_repeat_previous_rounding_and_optimal_policy():
    """Envs with different delays and decks step together; answering from the history scores exactly 1."""
    params = torch.tensor([[1.0, 36.0], [4.0, 52.0], [7.4, 101.0], [32.0, 156.0], [2.5, 38.0]])
    env = make_task("ParamRepeatPrevious", 5, seed=0)
    k, cards = env.task(params)
    assert k.tolist() == [1, 4, 7, 32, 2] and cards.tolist() == [36, 52, 100, 156, 40]  # ties to even
    env.set_params(params)
    env.reset()
    total = torch.zeros(5, dtype=torch.float64)
    length = torch.zeros(5, dtype=torch.long)
    ended = torch.zeros(5, dtype=torch.bool)
    while not ended.all():
        state = env.state
        slot = ((state["t"] + 1) % state["k"]).unsqueeze(1)
        step = env.step(state["history"].gather(1, slot).squeeze(1).long())
        total += step.reward.double() * ~ended
        length += ~ended
        ended |= step.done
    assert length.tolist() == [35, 51, 99, 155, 39]
    assert total.tolist() == pytest.approx([1.0] * 5, abs=1e-5)


def test_param_repeat_previous_random_returns_lie_in_minus_one_one():
    env = make_env(EnvConfig(backend="native", id="ParamRepeatPrevious", num_envs=256), seed=0)
    gen = torch.Generator().manual_seed(123)
    env.set_params(uniform(env.param_space, gen)(256))
    env.reset()
    returns = []
    for _ in range(400):
        step = env.step(torch.randint(0, 4, (256,), generator=gen))
        ep = step.info["episode"]
        returns.append(ep["return"][ep["done"]])
        if ep["done"].any():
            env.set_params(uniform(env.param_space, gen)(int(ep["done"].sum())), rows=ep["done"])
    returns = torch.cat(returns)
    assert returns.numel() > 256
    assert (returns.abs() <= 1 + 1e-5).all()
    # a guess is right 1/4 of the time: +1/4 - 3/4 per scored step, whatever the deck and delay
    assert returns.mean().item() == pytest.approx(-0.5, abs=0.03)


# ------------------------------------------------------------------ GatedCorridor


def scripted(env: GatedCorridor) -> torch.Tensor:
    """The optimal policy, reading the state: turn the gate's key when blocked, else walk right."""
    state = env.state
    blocked, gate = env._blocked(state["position"], state["opened"])
    return torch.where(blocked, 2 + env.gate_keys[gate], 1)


def run_episodes(env, policy: Callable[[], torch.Tensor], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All rewards ``[steps, B]`` and the first episode's return per env (checking every obs is in bounds)."""
    env.reset()
    rewards, first = [], torch.zeros(env.num_envs)
    ended = torch.zeros(env.num_envs, dtype=torch.bool)
    low = torch.as_tensor(env.observation_space.low)
    high = torch.as_tensor(env.observation_space.high)
    for _ in range(steps):
        step = env.step(policy())
        assert ((step.obs >= low) & (step.obs <= high)).all()
        rewards.append(step.reward)
        first += step.reward * ~ended
        ended |= step.done
    return torch.stack(rewards), first


def test_gated_corridor_gates_by_hand_without_traps():
    env = make_task("GatedCorridor", 1, seed=0, params=[5 / 31, 0.0], trap_keys=False)  # target 6, gate at 4
    assert env.target_distance(torch.tensor([[5 / 31, 0.0]])).tolist() == [6]
    assert env.gate_keys[1:].tolist() == [1, 0, 1, 0, 0, 1, 0] and env.action_space.n == 4
    obs = env.reset()
    assert obs.tolist() == [[6 / 32, 6 / 32, 0.0, 0.0]]
    for _ in range(4):
        step = env.step(torch.tensor([1]))
    assert env.state["position"].item() == 4 and step.obs[0, 3] == 1.0  # blocked at the gate
    for action in (1, 2, 1):  # right is blocked; key 0 is the wrong one
        step = env.step(torch.tensor([action]))
        assert env.state["position"].item() == 4 and step.reward.item() == 0.0
    step = env.step(torch.tensor([3]))  # key 1 opens it
    assert env.state["position"].item() == 4 and step.obs[0, 3] == 0.0
    env.step(torch.tensor([0]))  # step back and forth: the gate stays open
    env.step(torch.tensor([1]))
    env.step(torch.tensor([1]))
    step = env.step(torch.tensor([1]))
    assert step.terminated.item() and step.reward.item() == pytest.approx(1 - 0.5 * 12 / 64)


def test_gated_corridor_wrong_key_at_a_closed_gate_sends_the_agent_back_and_closes_every_gate():
    env = make_task("GatedCorridor", 3, seed=0, params=[13 / 31, 0.0], trap_keys=True)  # target 14; keys 1, 0, 1
    env.reset()
    step = env.step(torch.tensor([2, 3, 1]))  # keys turned in cell 0, away from any gate, do nothing
    assert env.state["position"].tolist() == [0, 0, 1]
    for _ in range(4):
        env.step(torch.tensor([1, 1, 1]))
    assert env.state["position"].tolist() == [4, 4, 4]
    step = env.step(torch.tensor([3, 3, 3]))  # gate 1 opens for everyone
    for _ in range(4):
        step = env.step(torch.tensor([1, 1, 1]))
    assert env.state["position"].tolist() == [8, 8, 8] and (step.obs[:, 3] == 1).all()
    step = env.step(torch.tensor([3, 2, 1]))  # wrong key (a trap), right key, blocked move
    assert env.state["position"].tolist() == [0, 8, 8] and env.state["opened"].tolist() == [0, 6, 2]
    assert not step.done.any() and (step.reward == 0).all()
    assert step.obs[:, 2].tolist() == [0.0, 0.25, 0.25] and step.obs[:, 3].tolist() == [0.0, 0.0, 1.0]
    for _ in range(4):  # env 0 walks back: gate 1 is closed again; env 1 walks on to gate 3
        step = env.step(torch.tensor([1, 1, 2]))
    assert env.state["position"].tolist() == [4, 12, 8] and step.obs[:, 3].tolist() == [1.0, 1.0, 0.0]
    env.step(torch.tensor([1, 3, 1]))
    env.step(torch.tensor([1, 1, 1]))
    step = env.step(torch.tensor([1, 1, 1]))
    assert step.done.tolist() == [False, True, False] and env.state["position"].tolist() == [4, 0, 11]
    assert step.reward.tolist()[0] == 0.0 and step.reward[1].item() == pytest.approx(1 - 0.5 * 18 / 64)


def test_gated_corridor_gate_index_observation_one_hot_of_the_closed_gate():
    env = make_task("GatedCorridor", 2, seed=0, params=[13 / 31, 0.0], gate_observation="index")  # gates at 4, 8, 12
    assert env.observation_space.shape == (3 + 7,)
    obs = env.reset()
    assert obs[:, 3:].sum().item() == 0.0
    for _ in range(4):
        step = env.step(torch.tensor([1, 1]))
    assert step.obs[:, 3:].tolist() == [[1.0, 0, 0, 0, 0, 0, 0]] * 2  # closed gate 1
    step = env.step(torch.tensor([3, 1]))  # env 0 opens gate 1; env 1 is blocked
    assert step.obs[0, 3:].sum().item() == 0.0 and step.obs[1, 3:].tolist() == [1.0, 0, 0, 0, 0, 0, 0]
    for _ in range(4):
        step = env.step(torch.tensor([1, 1]))
    assert env.state["position"].tolist() == [8, 4] and step.obs[0, 3:].tolist() == [0, 1.0, 0, 0, 0, 0, 0]
    assert step.obs[:, :3].tolist() == [[6 / 32, 14 / 32, 8 / 32], [10 / 32, 14 / 32, 4 / 32]]
    with pytest.raises(ValueError, match=r"gate_observation must be 'flag' or 'index', got 'onehot'$"):
        make_task("GatedCorridor", 1, gate_observation="onehot")


def test_gated_corridor_locked_region_rewards_exactly_zero_whatever_the_policy():
    gen = torch.Generator().manual_seed(0)
    distance = torch.rand(256, generator=gen)
    lock = 0.8 + 1e-6 + torch.rand(256, generator=gen) * 0.2
    params = torch.stack([distance, lock.clamp(max=1.0)], -1)
    env = make_task("GatedCorridor", 256, seed=0)
    env.set_params(params)
    rewards, _ = run_episodes(env, lambda: scripted(env), 200)
    assert (rewards == 0).all()
    rewards, _ = run_episodes(env, lambda: torch.randint(0, 4, (256,), generator=gen), 200)
    assert (rewards == 0).all()
    assert (env.optimal_return(params) == 0).all()


def test_gated_corridor_lock_threshold_moves_the_locked_region():
    """With lock_threshold 0.3 the scripted policy masters the test tasks with lock <= 0.3 and earns 0 elsewhere."""
    tasks = GatedCorridor.test_set()
    env = make_task("GatedCorridor", 50, seed=0, lock_threshold=0.3)
    env.set_params(tasks)
    rewards, returns = run_episodes(env, lambda: scripted(env), 64)
    unlocked = tasks[:, 1] <= 0.3
    assert int(unlocked.sum()) == 20
    assert (returns[unlocked] >= GatedCorridor.mastered_return).all() and (returns[~unlocked] == 0).all()
    assert (rewards[:, ~unlocked] == 0).all()
    assert torch.equal(env.optimal_return(tasks) > 0, unlocked)
    with pytest.raises(ValueError, match=r"GatedCorridor.: lock_threshold must be in \[0, 1\].*got 1.5$"):
        make_task("GatedCorridor", 1, lock_threshold=1.5)


def test_gated_corridor_scripted_policy_masters_the_unlocked_test_set():
    tasks = GatedCorridor.test_set()
    env = make_task("GatedCorridor", 50, seed=0)
    env.set_params(tasks)
    _, returns = run_episodes(env, lambda: scripted(env), 64)
    best = env.optimal_return(tasks)
    assert torch.allclose(returns, best, atol=1e-6)
    mastered = returns >= GatedCorridor.mastered_return
    assert mastered.tolist() == (tasks[:, 1] <= 0.8).tolist() and int(mastered.sum()) == 40


def test_gated_corridor_test_set_structure():
    tasks = GatedCorridor.test_set()
    assert tasks.shape == (50, 2) and torch.equal(tasks, GatedCorridor.test_set())
    assert GatedCorridor.param_space.contains(tasks).all()
    assert torch.unique(tasks, dim=0).shape[0] == 50
    env = make_task("GatedCorridor", 1)
    assert int((tasks[:, 1] > env.lock_threshold).sum()) == 10
    gates = env.gates_before(tasks[:10]).tolist()
    assert gates == sorted(gates) and gates[0] == 0 and gates[-1] == 7  # every band of distances is tested


def test_gated_corridor_random_policy_reaches_near_targets_only():
    """Before the first gate a random walk succeeds most of the time; past four gates practically never."""
    gen = torch.Generator().manual_seed(0)
    rates = []
    for distance in (3 / 31, 16 / 31):  # targets 4 (no gate) and 17 (four gates)
        env = make_task("GatedCorridor", 4096, seed=0, params=[distance, 0.0])
        _, returns = run_episodes(env, lambda: torch.randint(0, 4, (4096,), generator=gen), 64)
        rates.append((returns > 0).float().mean().item())
    assert rates[0] > 0.7 and rates[1] < 0.003, rates


@pytest.mark.slow
def test_ppo_learns_near_gated_corridor_targets_but_not_far_ones_from_scratch(tmp_path):
    """PPO (MLP) masters a target behind one gate in 50k steps; a target behind seven gets no reward at all."""
    from lifelong.config import load_config
    from lifelong.run import train

    def final(distance: float) -> float:
        cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", [
            "env.backend=native", "env.id=GatedCorridor", f"env.kwargs={{params: [{distance}, 0.0]}}",
            "env.num_envs=16", "run.total_steps=50000", "run.eval_every=0", "run.eval_episodes=32",
            "run.checkpoint_every=0", "run.progress=false", "agent.gamma=0.99", "agent.gae_lambda=0.95",
            "agent.ent_coef=0.01", "agent.num_steps=64", "agent.epochs=4"])
        return train(cfg, tmp_path / str(distance))["final_eval"]["mean"]

    near = final(0.2)  # target 7, one gate: best return 1 - 0.5 * 8 / 64
    assert near >= GatedCorridor.mastered_return and near == pytest.approx(1 - 0.5 * 8 / 64, abs=0.02)
    assert final(1.0) == 0.0  # target 32, seven gates


# ------------------------------------------------------------------------ CueRecall


def test_cue_recall_timeline_and_answers():
    gap = 5
    env = make_task("CueRecall", 8, seed=0, symbols=4, gap=gap)
    obs = env.reset()
    assert obs.shape == (8, 5) and (obs[:, :4].sum(-1) == 1).all() and (obs[:, 4] == 0).all()
    cue = obs[:, :4].argmax(-1)
    for t in range(gap + 1):
        step = env.step(cue)  # answering early does nothing
        assert (step.reward == 0).all() and not step.done.any()
        blank = torch.zeros(8, 5)
        if t == gap:
            blank[:, 4] = 1.0  # the query
        assert torch.equal(step.obs, blank)
    answer = torch.where(torch.arange(8) < 4, cue, (cue + 1) % 4)  # half right, half wrong
    step = env.step(answer)
    assert step.terminated.all() and step.reward.tolist() == [1.0] * 4 + [0.0] * 4
    assert (step.obs[:, :4].sum(-1) == 1).all() and (step.obs[:, 4] == 0).all()  # the next episode's cue
    # The final observation is feedback: the cue again, with the query flag.
    assert torch.equal(step.final_obs, torch.cat([torch.nn.functional.one_hot(cue, 4).float(), torch.ones(8, 1)], -1))


def test_cue_recall_random_answers_score_one_in_k():
    env = make_env(EnvConfig(backend="native", id="CueRecallEasy", num_envs=4096), seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(123)  # not the env's seed: its generator would draw the same numbers
    for _ in range(33):
        env.step(torch.zeros(4096, dtype=torch.int64))
    step = env.step(torch.randint(0, 4, (4096,), generator=gen))
    ep = step.info["episode"]
    assert ep["done"].all() and ep["length"].tolist() == [34] * 4096
    assert ep["return"].mean().item() == pytest.approx(0.25, abs=0.03)


def test_cue_recall_levels():
    for level, (symbols, gap) in {"Easy": (4, 32), "Medium": (8, 128), "Hard": (16, 512)}.items():
        env = make_task(f"CueRecall{level}", 1)
        assert (env.symbols, env.gap) == (symbols, gap)
        assert env.observation_space.shape == (symbols + 1,)
    with pytest.raises(ConfigError, match="symbols must be >= 2"):
        make_env(EnvConfig(backend="native", id="CueRecall", kwargs={"symbols": 1}), seed=0)
    assert {"ParamCartPole", "ParamRepeatPrevious", "GatedCorridor", "CueRecall"} <= set(TASKS)


# ---------------------------------------------------------------------- Stump Tracks


def test_stump_tracks_terrain_follows_the_params():
    from lifelong.envs import stump_tracks as st

    env = gym.make(st.STUMP_TRACKS_ID)
    walker = env.unwrapped
    step = st.walker.TERRAIN_STEP
    span = st.walker.TERRAIN_LENGTH * step - st.walker.TERRAIN_STARTPAD * step
    seen = {}
    for params in ([0.0, 6.0], [3.0, 0.0], [1.5, 1.0], [1.5, 1.0]):
        obs, info = env.reset(seed=7, options={"params": np.array(params)})
        assert obs.shape == (24,) and info["params"].tolist() == params
        assert len(walker.stump_x) == math.ceil(span / (step + params[1]))
        assert np.allclose(np.diff(walker.stump_x), step + params[1])
        heights = walker.stump_heights
        assert heights.min() >= st.MIN_HEIGHT
        if params[0] >= 1:
            assert abs(heights.mean() - params[0]) < 3 * st.HEIGHT_STD / math.sqrt(len(heights)) + 1e-9
            assert 0.05 < heights.std() < 0.15
        seen.setdefault(tuple(params), []).append(heights.copy())
    assert np.array_equal(*seen[(1.5, 1.0)])  # same seed, same params: the same track
    assert len(walker.terrain) == len(walker.stump_x) + st.walker.TERRAIN_LENGTH - 1
    env.reset(seed=8)  # no params: the last ones stay
    assert walker.params.tolist() == [1.5, 1.0]
    with pytest.raises(ValueError, match=r"options\['params'\]: row 0 has stump_spacing=7.0, outside \[0.0, 6.0\]"):
        env.reset(options={"params": [1.0, 7.0]})
    env.close()


def test_stump_tracks_lidar_sees_a_stump_and_random_actions_run():
    from lifelong.envs import stump_tracks as st

    env = st.StumpTracks()
    flat, _ = env.reset(seed=0, options={"params": [0.0, 6.0]})
    tall, _ = env.reset(seed=0, options={"params": [3.0, 0.0]})
    # lidar rays 0..9 sweep from straight down to nearly level ahead: on flat ground the last two reach
    # nothing, with a wall of tall stumps 4.7 units ahead they hit it; the ground rays agree
    assert (flat[22:] == 1).all() and (tall[22:] < 0.95).all()
    assert np.allclose(flat[14:22], tall[14:22], atol=1e-5)
    rng = np.random.default_rng(0)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        assert obs.shape == (24,) and np.isfinite(obs).all()
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    assert terminated and total < 0  # random legs fall (-100) against the stumps
    short = st.StumpTracks(max_episode_steps=5)
    short.reset(seed=0, options={"params": [0.0, 6.0]})
    ends = [short.step(np.zeros(4, np.float32))[3] for _ in range(5)]
    assert ends == [False] * 4 + [True]


def test_stump_tracks_test_set():
    from lifelong.envs.stump_tracks import STUMP_TRACKS_SPACE, stump_tracks_test_set

    tasks = stump_tracks_test_set()
    assert tasks.shape == (50, 2) and torch.equal(tasks, stump_tracks_test_set())
    assert STUMP_TRACKS_SPACE.contains(tasks).all() and torch.unique(tasks, dim=0).shape[0] == 50
    assert tasks[0].tolist() == [1.5, 2.0] and tasks[1].tolist() == pytest.approx([0.75, 4.0])
    # spread over the whole box: each quarter of each axis holds 10 to 15 of the 50
    for col, high in ((0, 3.0), (1, 6.0)):
        counts = torch.histc(tasks[:, col], bins=4, min=0.0, max=high)
        assert counts.min() >= 10 and counts.max() <= 15, counts


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_stump_tracks_params_through_the_gymnasium_backend(mode):
    env = make_env(EnvConfig(backend="gymnasium", id="lifelong/StumpTracks-v0", import_="lifelong.envs.stump_tracks",
                             num_envs=3, autoreset_mode=mode), seed=0)
    assert env.param_space.names == ("stump_height", "stump_spacing")
    assert env.current_params.tolist() == [[1.5, 3.0]] * 3
    vec = env.unwrapped._vec
    first = torch.tensor([[0.0, 6.0], [3.0, 0.0], [1.0, 2.0]])
    env.set_params(first)
    obs = env.reset()
    assert obs.shape == (3, 24)
    assert np.array_equal(np.stack(vec.get_attr("params")), first.numpy())
    nxt = torch.tensor([[2.0, 4.0], [0.5, 0.5], [2.5, 5.0]])
    env.set_params(nxt)
    gen = torch.Generator().manual_seed(0)
    ended = torch.zeros(3, dtype=torch.bool)
    for _ in range(400):
        step = env.step(torch.rand(3, 4, generator=gen) * 2 - 1)
        ep = step.info["episode"]
        done = ep["done"]
        if done.any():
            assert torch.equal(ep["params"][done], first[done])
            # the sub-env that restarted built its track from the new params
            used = np.stack(vec.get_attr("params"))
            counts = [len(x) for x in vec.get_attr("stump_x")]
            for row in done.nonzero().squeeze(1).tolist():
                assert used[row].tolist() == nxt[row].tolist()
                step_x = 14 / 30
                assert counts[row] == math.ceil((200 - 20) * step_x / (step_x + nxt[row, 1].item()) - 1e-9)
            ended |= done
        if ended.all():
            break
    assert ended.all()
    assert torch.equal(env.current_params, nxt)
    env.close()
