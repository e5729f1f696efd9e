"""Dynamics-model tools: Gaussian ensemble, ModelEnv rollouts and the CEM planner, on linear systems."""

from __future__ import annotations

import math

import pytest
import torch

from lifelong.config import ConfigError, build
from lifelong.optim import FlatAdam
from lifelong.world_models import CEMConfig, CEMPlanner, GaussianEnsemble, ModelEnv, bootstrap_indices

DT = 0.1


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on a shared 2-core machine: several threads oversubscribe it and run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def double_integrator(obs: torch.Tensor, action: torch.Tensor, goal: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, velocity) with bounded acceleration; reward = -|position - goal| after the step."""
    velocity = obs[:, 1] + action[:, 0].clamp(-1, 1) * DT
    position = obs[:, 0] + velocity * DT
    return torch.stack([position, velocity], -1), -(position - goal).abs()


class LinearGaussianSystem:
    """``x' = A x + B u + noise`` with two damped rotations, and reward ``c . x``."""

    def __init__(self, noise: float = 0.05, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        rotation = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
        self.a = torch.block_diag(0.97 * rotation, 0.9 * rotation)
        self.b = torch.randn(4, 2, generator=gen) * 0.5
        self.c = torch.randn(4, generator=gen)
        self.noise = noise

    def step(self, x: torch.Tensor, u: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Next state and reward ``c . x``."""
        return x @ self.a.T + u @ self.b.T + self.noise * torch.randn(x.shape, generator=gen), x @ self.c


def fit(ensemble: GaussianEnsemble, obs, action, next_obs, reward, steps: int, seed: int = 0) -> list[float]:
    """Bootstrapped minibatch training; returns the NLL metric of every step."""
    gen = torch.Generator().manual_seed(seed)
    ensemble.set_normalizer(obs, action)
    optimizer = FlatAdam(ensemble.parameters(), lr=3e-3)
    rows = bootstrap_indices(ensemble.members, obs.shape[0], generator=gen)
    history = []
    for _ in range(steps):
        batch = rows[:, torch.randint(obs.shape[0], (256,), generator=gen)]
        loss, metrics = ensemble.loss(obs[batch], action[batch], next_obs[batch], reward[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics["nll"].item())
    return history


@pytest.fixture(scope="module")
def linear_system_model() -> tuple[LinearGaussianSystem, GaussianEnsemble, dict, list[float], dict]:
    """An ensemble trained on 4000 random transitions of the linear-Gaussian system."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    system = LinearGaussianSystem()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 4, generator=gen) * 1.5
    u = torch.rand(4000, 2, generator=gen) * 2 - 1
    x_next, reward = system.step(x, u, gen)
    ensemble = GaussianEnsemble(4, 2, members=5, hidden=64, layers=3)
    initial = {"max": ensemble.max_logvar.detach().clone(), "min": ensemble.min_logvar.detach().clone()}
    history = fit(ensemble, x, u, x_next, reward, steps=600)
    torch.set_num_threads(threads)
    return system, ensemble, {"x": x, "u": u}, history, initial


def test_ensemble_nll_decreases_and_log_variance_stays_in_learned_bounds(linear_system_model):
    system, ensemble, data, history, initial = linear_system_model
    assert sum(history[-50:]) / 50 < sum(history[:10]) / 10 - 2.0
    # The noise variance is 0.05^2 (log -6.0): the learned log-variance of the state deltas gets near it.
    with torch.no_grad():
        _, logvar = ensemble(data["x"][:500], data["u"][:500])
    assert -7.5 < logvar[..., :4].mean() < -4.5
    # The bound regulariser moved both bounds inward; even absurd inputs stay inside them.
    assert torch.all(ensemble.max_logvar < initial["max"]) and torch.all(ensemble.min_logvar > initial["min"])
    with torch.no_grad():
        _, extreme = ensemble(torch.randn(100, 4) * 1e4, torch.randn(100, 2) * 1e4)
    slack = 1e-3  # the second softplus can exceed the upper bound by at most log(1 + e^-(max - min))
    assert torch.all(extreme <= ensemble.max_logvar + slack) and torch.all(extreme >= ensemble.min_logvar)


def test_ensemble_members_differ_most_away_from_the_data(linear_system_model):
    _, ensemble, data, _, _ = linear_system_model
    with torch.no_grad():
        inside, _ = ensemble(data["x"][:500], data["u"][:500])
        outside, _ = ensemble(data["x"][:500] * 6, data["u"][:500])
    disagreement_inside = inside.std(0).mean()
    assert disagreement_inside > 0  # independent inits and bootstraps: members are different functions
    assert outside.std(0).mean() > 5 * disagreement_inside


def test_open_loop_prediction_beats_copying_the_last_observation(linear_system_model):
    system, ensemble, _, _, _ = linear_system_model
    gen = torch.Generator().manual_seed(2)
    horizon, rows = 15, 256
    x0 = torch.randn(rows, 4, generator=gen)
    actions = torch.rand(horizon, rows, 2, generator=gen) * 2 - 1
    truth, x = [], x0
    for k in range(horizon):
        x, _ = system.step(x, actions[k], gen)
        truth.append(x)
    truth = torch.stack(truth)
    model_env = ModelEnv(ensemble.step)
    torch.manual_seed(3)
    rollout = model_env.rollout(x0, actions=actions)
    model_error = (rollout["obs"][1:] - truth).square().mean()
    copy_error = (x0 - truth).square().mean()
    assert model_error < 0.05 * copy_error, (model_error, copy_error)
    # Rewards are predicted too: reward[k] is c . obs[k] of the step's start state.
    expected_reward = rollout["obs"][:-1] @ system.c
    assert (rollout["reward"] - expected_reward).abs().mean() < 0.1 * expected_reward.abs().mean()


def test_predict_draws_each_row_from_one_member():
    torch.manual_seed(0)
    ensemble = GaussianEnsemble(3, 1, members=4, hidden=16, layers=2)
    obs, action = torch.randn(64, 3), torch.randn(64, 1)
    prediction = ensemble.predict(obs, action, deterministic=True, generator=torch.Generator().manual_seed(0))
    assert prediction.mean.shape == (4, 64, 4) and prediction.var.shape == (4, 64, 4)
    rows = torch.arange(64)
    torch.testing.assert_close(prediction.next_obs, prediction.mean[prediction.member, rows, :3])
    torch.testing.assert_close(prediction.reward, prediction.mean[prediction.member, rows, 3])
    assert len(set(prediction.member.tolist())) == 4
    delta, _ = ensemble(obs, action)
    torch.testing.assert_close(prediction.mean[..., :3], obs + delta[..., :3])  # deltas become next observations
    sampled = ensemble.predict(obs, action, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled.member, prediction.member)
    z = (sampled.next_obs - prediction.next_obs) / prediction.var[prediction.member, rows, :3].sqrt()
    assert 0.5 < z.std() < 1.5


def test_model_env_masks_rewards_after_termination():
    def dynamics(obs, action):
        return obs + action, None

    model_env = ModelEnv(dynamics, reward_fn=lambda obs, action, nxt: nxt[:, 0],
                         termination_fn=lambda obs, action, nxt: nxt[:, 0] >= 3)
    start = torch.tensor([[0.0], [2.0]])
    rollout = model_env.rollout(start, horizon=4, policy=lambda obs: torch.ones_like(obs))
    torch.testing.assert_close(rollout["obs"][:, :, 0], torch.tensor([[0.0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]))
    # Row 0 terminates at its 3rd step (reaching 3), row 1 at its 1st; later rewards are masked.
    torch.testing.assert_close(rollout["reward"], torch.tensor([[1.0, 3], [2, 0], [3, 0], [0, 0]]))
    torch.testing.assert_close(rollout["alive"], torch.tensor([[1.0, 1], [1, 0], [1, 0], [0, 0]]))
    plans = torch.ones(2, 3, 4, 1) * torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)
    returns = model_env.evaluate_plans(start, plans, gamma=0.5)
    torch.testing.assert_close(returns[0], torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 0.0, -1 - 1 - 0.75 - 0.5]))
    torch.testing.assert_close(returns[1, 0], torch.tensor(3.0))
    with pytest.raises(ValueError, match="reward"):
        ModelEnv(dynamics).rollout(start, horizon=1, policy=torch.ones_like)


def test_cem_reaches_the_goal_of_a_double_integrator_with_the_true_model():
    model_env = ModelEnv(double_integrator)
    planner = CEMPlanner(CEMConfig(horizon=15, population=500, elites=50, iterations=5), torch.tensor([-1.0]),
                         torch.tensor([1.0]), model_env.evaluate_plans, generator=torch.Generator().manual_seed(0))
    obs = torch.tensor([[-1.0, 0.0], [0.7, 0.8], [1.5, 0.0], [0.0, -0.5]])  # four envs planned together
    positions = []
    for _ in range(50):
        action = planner.plan(obs)
        assert action.shape == (4, 1) and torch.all(action.abs() <= 1)
        obs, _ = double_integrator(obs, action)
        positions.append(obs[:, 0])
    positions = torch.stack(positions)
    assert torch.all((positions[35:] - 0.7).abs() < 0.05), positions[35:]


def test_cem_with_a_learned_ensemble_reaches_the_goal():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(3000, 2, generator=gen) * torch.tensor([4.0, 3.0]) - torch.tensor([2.0, 1.5])
    action = torch.rand(3000, 1, generator=gen) * 2 - 1
    next_obs, reward = double_integrator(obs, action)
    ensemble = GaussianEnsemble(2, 1, members=5, hidden=64, layers=2, predict_reward=False)
    fit(ensemble, obs, action, next_obs, reward, steps=400)
    known_reward = lambda o, a, nxt: -(nxt[:, 0] - 0.7).abs()  # noqa: E731
    model_env = ModelEnv(ensemble.step, reward_fn=known_reward)
    planner = CEMPlanner(CEMConfig(horizon=12, population=200, elites=20, iterations=3), torch.tensor([-1.0]),
                         torch.tensor([1.0]), model_env.evaluate_plans, generator=torch.Generator().manual_seed(1))
    state = torch.tensor([[-1.0, 0.0], [1.5, 0.0]])
    for _ in range(40):
        state, _ = double_integrator(state, planner.plan(state))
    assert torch.all((state[:, 0] - 0.7).abs() < 0.1) and torch.all(state[:, 1].abs() < 0.2), state


def test_cem_warm_start_shifts_the_plan_and_reset_clears_it():
    calls = []

    def evaluate(obs, plans):
        calls.append(plans.shape)
        return -(plans - 0.5).square().sum((-2, -1))  # best plan: 0.5 everywhere

    planner = CEMPlanner(CEMConfig(horizon=4, population=64, elites=8, iterations=3), torch.tensor([-1.0]),
                         torch.tensor([1.0]), evaluate, generator=torch.Generator().manual_seed(0))
    action = planner.plan(torch.zeros(2, 3))
    assert calls == [(2, 64, 4, 1)] * 3
    assert torch.all((action - 0.5).abs() < 0.2)
    warm = planner.mean
    # Shifted by one step, with the new last step in the middle of the bounds.
    assert torch.all((warm[:, :3] - 0.5).abs() < 0.2) and torch.all(warm[:, 3] == 0.0)
    planner.reset(torch.tensor([True, False]))
    assert torch.all(planner.mean[0] == 0.0) and torch.equal(planner.mean[1], warm[1])
    with pytest.raises(ConfigError, match="elites"):
        build(CEMConfig, {"population": 10, "elites": 10})
