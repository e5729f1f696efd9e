"""Native torch-batched envs: POPGym rules, same-step autoreset, seeding, physics against Gymnasium, PPO."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lifelong.config import ConfigError, EnvConfig, load_config
from lifelong.envs import make_env
from lifelong.envs.native import TASKS, NativeVecEnv, draw_cards, make_task
from lifelong.envs.wrappers import EpisodeStats
from lifelong.registry import ENV_BACKENDS

ROOT = Path(__file__).resolve().parent.parent
POPGYM_FAMILIES = [
    "RepeatPrevious", "RepeatFirst", "CountRecall", "Autoencode", "PositionOnlyCartPole", "VelocityOnlyCartPole",
    "NoisyPositionOnlyCartPole", "PositionOnlyPendulum", "NoisyPositionOnlyPendulum", "MultiarmedBandit",
    "HigherLower", "MineSweeper", "Battleship", "Concentration",
]
LEVELS = ("Easy", "Medium", "Hard")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run with one intra-op thread: on a loaded 2-core machine OpenMP's waits dominate small ops."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_actions(env: NativeVecEnv, gen: torch.Generator) -> torch.Tensor:
    """Uniform random actions for every env of ``env``."""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (env.num_envs,), generator=gen)
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand((env.num_envs, *space.shape), generator=gen)


def suit(obs: torch.Tensor) -> torch.Tensor:
    """The index of the one-hot block ``obs [B, n]``."""
    return obs.argmax(-1)


def episode_of(env, policy, steps: int | None = None) -> dict:
    """Reset ``env`` and run ``policy(obs_history, t) -> action`` until every env ended once (or ``steps``)."""
    obs = env.reset()
    history, rewards, steps_out = [obs], [], []
    ended = torch.zeros(env.num_envs, dtype=torch.bool)
    t = 0
    while not ended.all() if steps is None else t < steps:
        step = env.step(policy(history, t))
        rewards.append(step.reward)
        steps_out.append(step)
        history.append(step.obs)
        ended |= step.done
        t += 1
    return {"history": history, "rewards": torch.stack(rewards), "steps": steps_out}


def scripted_deal(env: NativeVecEnv, cards: list[int]) -> None:
    """Make ``env`` (one env) deal ``cards`` in order, checking each is still in the deck."""
    queue = list(cards)

    def deal(remaining: torch.Tensor) -> torch.Tensor:
        if not queue:  # the script is over (the next episode starts): deal at random
            return draw_cards(remaining, env.generator)
        card = queue.pop(0)
        assert remaining.shape[0] == 1 and remaining[0, card] > 0, (card, remaining)
        return torch.tensor([card])

    env.deal = deal


# ----------------------------------------------------------------------- registry


def test_backend_is_registered_and_make_env_wraps_episode_stats():
    assert "native" in ENV_BACKENDS.names()
    env = make_env(EnvConfig(backend="native", id="RepeatPreviousEasy", num_envs=3), seed=0, device="cpu")
    assert isinstance(env, EpisodeStats) and isinstance(env.unwrapped, NativeVecEnv)
    obs = env.reset()
    assert obs.shape == (3, 4) and obs.dtype == torch.float32
    step = env.step(torch.zeros(3, dtype=torch.int64))
    assert step.reward.dtype == torch.float32 and step.terminated.dtype == torch.bool
    assert "episode" in step.info


def test_every_popgym_level_is_a_task():
    for family in POPGYM_FAMILIES:
        for level in ("", *LEVELS):
            assert family + level in TASKS
    assert {"CartPole", "Pendulum"} <= set(TASKS)


@pytest.mark.parametrize(
    "task_id, kwargs, fragment",
    [
        ("RepeatPreviosEasy", {}, "did you mean 'RepeatPreviousEasy'"),
        ("RepeatPreviousEasy", {"kk": 3}, "does not accept kk (accepted: num_decks, k, prev_action)"),
        ("RepeatPreviousEasy", {"k": 52}, "k must be in 1..51"),
        ("RepeatPreviousEasy", {"seed": 3}, "seed cannot be set here"),
        ("CountRecall", {"deck_type": "jokers"}, "deck_type must be one of colors, suits, ranks"),
        ("MineSweeper", {"difficulty": "insane"}, "difficulty must be one of easy, medium, hard"),
    ],
)
def test_bad_ids_and_kwargs_give_one_line_config_errors(task_id, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        make_env(EnvConfig(backend="native", id=task_id, kwargs=kwargs), seed=0)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("env.id:" if task_id not in TASKS else "env.kwargs:")


def test_kwargs_override_a_preset_and_max_episode_steps_truncates():
    env = make_env(EnvConfig(backend="native", id="RepeatPreviousEasy", kwargs={"k": 2}), seed=0)
    assert env.unwrapped.k == 2 and env.unwrapped.cards == 52
    env = make_env(EnvConfig(backend="native", id="PositionOnlyCartPoleEasy", num_envs=4, max_episode_steps=7),
                   seed=0)
    env.reset()
    for t in range(7):
        step = env.step(torch.tensor([0, 1, 0, 1]))
    assert (step.truncated | step.terminated).all() and step.info["episode"]["length"].tolist() == [7] * 4
    assert step.reward[0].item() == pytest.approx(1 / 200)  # the reward scale stays the task's


# ----------------------------------------------------------------- memory tasks


@pytest.mark.parametrize("level, decks, k", [("Easy", 1, 4), ("Medium", 2, 32), ("Hard", 3, 64)])
def test_repeat_previous_rules(level, decks, k):
    cards = 52 * decks
    env = make_task(f"RepeatPrevious{level}", 8, seed=1)

    def optimal(history, t):  # the suit of the card dealt k-1 steps before the current one
        return suit(history[t + 1 - k]) if t + 1 >= k else torch.zeros(8, dtype=torch.int64)

    run = episode_of(env, optimal)
    rewards, steps = run["rewards"], run["steps"]
    assert len(steps) == cards - 1  # every env ends at the same step
    assert all(not s.done.any() for s in steps[:-1]) and steps[-1].terminated.all()
    assert not steps[-1].truncated.any()
    assert (rewards[: k - 1] == 0).all() and torch.allclose(rewards[k - 1 :], torch.tensor(1 / (cards - k)))
    assert torch.allclose(rewards.sum(0), torch.ones(8))
    assert steps[-1].info == {}  # no episode stats: make_task gives the bare env
    # the episode dealt the whole deck: reset obs, the step obs, and the true last obs in final_obs
    dealt = torch.stack([suit(o) for o in run["history"][:-1]] + [suit(steps[-1].final_obs)])
    for s in range(4):
        assert ((dealt == s).sum(0) == cards // 4).all()

    wrong = episode_of(env, lambda h, t: (optimal(h, t) + 1) % 4)
    assert torch.allclose(wrong["rewards"].sum(0), -torch.ones(8))


def test_repeat_first_rules():
    env = make_task("RepeatFirstMedium", 4, seed=2)
    run = episode_of(env, lambda h, t: suit(h[0]))
    assert len(run["steps"]) == 52 * 8 - 1 and run["steps"][-1].terminated.all()
    assert torch.allclose(run["rewards"], torch.tensor(1 / (52 * 8 - 1)))
    assert torch.allclose(run["rewards"].sum(0), torch.ones(4), atol=1e-5)
    dealt = torch.stack([suit(o) for o in run["history"][:-1]] + [suit(run["steps"][-1].final_obs)])
    assert ((dealt == 2).sum(0) == 104).all()


@pytest.mark.parametrize("level, decks, kinds", [("Easy", 1, 2), ("Medium", 2, 4), ("Hard", 4, 13)])
def test_count_recall_rules(level, decks, kinds):
    cards = 52 * decks
    env = make_task(f"CountRecall{level}", 6, seed=3)
    assert env.action_space.n == cards // kinds + 1 and env.observation_space.shape == (2 * kinds,)

    def optimal(history, t):  # value cards of the queried kind seen so far, the current one included
        values = torch.stack([suit(o[:, :kinds]) for o in history])
        query = suit(history[-1][:, kinds:])
        return (values == query).sum(0)

    run = episode_of(env, optimal)
    assert len(run["steps"]) == cards - 1 and run["steps"][-1].terminated.all()
    assert torch.allclose(run["rewards"], torch.tensor(1 / (cards - 1)))
    run = episode_of(env, lambda h, t: optimal(h, t) + 1)
    assert torch.allclose(run["rewards"].sum(0), -torch.ones(6), atol=1e-5)


@pytest.mark.parametrize("decks", [1, 3])
def test_autoencode_rules(decks):
    cards = 52 * decks
    env = make_task("Autoencode", 5, seed=4, num_decks=decks)

    def optimal(history, t):
        if t < cards - 1:  # watching: actions are ignored
            return torch.full((5,), 3)
        j = t - (cards - 1)
        return suit(history[cards - 1 - j][:, 2:])

    run = episode_of(env, optimal)
    rewards, history = run["rewards"], run["history"]
    assert len(run["steps"]) == 2 * cards - 1 and run["steps"][-1].terminated.all()
    assert (rewards[: cards - 1] == 0).all() and torch.allclose(rewards[cards - 1 :], torch.tensor(1 / cards))
    modes = torch.stack([o[:, :2].argmax(-1) for o in history[:-1]])  # index 1: watch, 0: play
    assert (modes[: cards - 1] == 1).all() and (modes[cards - 1 :] == 0).all()
    assert (torch.stack([suit(o[:, 2:]) for o in history[cards:-1]]) == 0).all()  # play shows (play, suit 0)
    watched = torch.stack([suit(o[:, 2:]) for o in history[:cards]])
    assert ((watched == 1).sum(0) == 13 * decks).all()
    wrong = episode_of(env, lambda h, t: (optimal(h, t) + 1) % 4)
    assert torch.allclose(wrong["rewards"].sum(0), -torch.ones(5), atol=1e-5)


def test_higher_lower_rules():
    env = make_task("HigherLowerMedium", 4, seed=5)
    gen = torch.Generator().manual_seed(0)
    run = episode_of(env, lambda h, t: torch.randint(0, 2, (4,), generator=gen))
    cards = 104
    assert len(run["steps"]) == cards - 1 and run["steps"][-1].terminated.all()
    ranks = [suit(o) for o in run["history"][:-1]] + [suit(run["steps"][-1].final_obs)]
    # replay the guesses against the ranks that were shown
    gen.manual_seed(0)
    for t, step in enumerate(run["steps"]):
        guess_higher = torch.randint(0, 2, (4,), generator=gen) == 0
        cur, nxt = ranks[t], ranks[t + 1]
        want = torch.where(nxt == cur, 0.0, torch.where((nxt > cur) == guess_higher, 1.0, -1.0)) / cards
        assert torch.allclose(step.reward, want)
    for r in range(13):
        assert ((torch.stack(ranks) == r).sum(0) == 8).all()


# ------------------------------------------------------------------- games


def test_multiarmed_bandit_rules():
    env = make_task("MultiarmedBanditEasy", 2, seed=6)
    obs = env.reset()
    assert obs.shape == (2, 12) and obs[:, :2].tolist() == [[1, 0]] * 2 and (obs[:, 2:] == 0).all()
    env.state["probs"] = torch.tensor([[1.0] + [0.0] * 9] * 2)
    total = torch.zeros(2)
    for t in range(200):
        step = env.step(torch.tensor([0, 3]))
        total += step.reward
        assert step.done.tolist() == [t == 199] * 2 and not step.terminated.any()
        if t < 199:
            assert step.obs[:, :2].tolist() == [[0, 1], [1, 0]]  # arm 0 pays, arm 3 never
            assert step.obs[0, 2 + 0] == 1 and step.obs[1, 2 + 3] == 1  # the previous action
    assert torch.allclose(total, torch.tensor([1.0, -1.0]))
    assert step.final_obs[1, 2 + 3] == 1 and (step.obs[:, 2:] == 0).all()  # prev action zeroed after reset
    assert 0.0 <= env.state["probs"].min() and env.state["probs"].max() < 1.0


def test_minesweeper_rules():
    env = make_task("MineSweeperEasy", 1, seed=7)  # 4x4, 2 mines, L = 14
    env.reset()
    mines = torch.zeros(1, 16, dtype=torch.bool)
    mines[0, [0, 15]] = True
    env.state["mines"] = mines
    counts = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]])  # 3x3 blocks, centre included
    env.state["counts"] = counts
    L = 14
    step = env.step(torch.tensor([5]))
    assert step.reward.item() == pytest.approx(1 / L) and step.obs[0, :3].tolist() == [0, 1, 0]
    step = env.step(torch.tensor([5]))  # clicked before
    assert step.reward.item() == pytest.approx(-0.5 / (L - 2)) and not step.done.any()
    for tile in [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]:  # 14 steps with one wasted: truncated
        step = env.step(torch.tensor([tile]))
        assert step.reward.item() == pytest.approx(1 / L)
    assert step.truncated.item() and not step.terminated.item()
    env.state["mines"], env.state["counts"] = mines, counts
    total = 0.0
    for tile in range(1, 15):  # every clear tile once: won at step 14
        step = env.step(torch.tensor([tile]))
        total += step.reward.item()
        assert step.done.item() == (tile == 14)
    assert step.terminated.item() and total == pytest.approx(1.0)
    env.state["mines"], env.state["counts"] = mines, counts
    step = env.step(torch.tensor([15]))
    assert step.terminated.item() and step.reward.item() == pytest.approx(-0.5 - 1 / L)
    # fresh boards have exactly 2 mines and counts of the 3x3 neighbourhood
    env = make_task("MineSweeperHard", 64, seed=8)
    env.reset()
    m = env.state["mines"].view(64, 8, 8).float()
    assert (m.sum((1, 2)) == 10).all()
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1))
    want = sum(padded[:, 1 + i : 9 + i, 1 + j : 9 + j] for i in (-1, 0, 1) for j in (-1, 0, 1))
    assert torch.equal(env.state["counts"].view(64, 8, 8), want.long())


def test_battleship_rules():
    env = make_task("BattleshipEasy", 256, seed=9)
    env.reset()
    ships = env.state["ships"].view(256, 8, 8)
    assert (ships.sum((1, 2)) == 12).all()  # 2 + 3 + 3 + 4 tiles: the ships never overlap
    assert 0.05 < ships.float().mean(0).min() and ships.float().mean(0).max() < 0.4  # spread over the board
    env = make_task("BattleshipEasy", 1, seed=10)
    env.reset()
    tiles = env.state["ships"][0].nonzero().squeeze(1).tolist()
    free = (~env.state["ships"][0]).nonzero().squeeze(1).tolist()
    step = env.step(torch.tensor([free[0]]))
    assert step.reward.item() == pytest.approx(-1 / 52) and step.obs[0, :2].tolist() == [1, 0]
    step = env.step(torch.tensor([tiles[0]]))
    assert step.reward.item() == pytest.approx(1 / 12) and step.obs[0, :2].tolist() == [0, 1]
    step = env.step(torch.tensor([tiles[0]]))  # a ship tile shot again is a miss
    assert step.reward.item() == pytest.approx(-1 / 52) and step.obs[0, :2].tolist() == [1, 0]
    for tile in tiles[1:]:
        step = env.step(torch.tensor([tile]))
        assert step.reward.item() == pytest.approx(1 / 12)
    assert step.terminated.item() and step.info == {}


def test_battleship_truncates_after_board_size_squared_shots():
    env = make_env(EnvConfig(backend="native", id="BattleshipEasy", num_envs=1), seed=0)
    env.reset()
    free = (~env.unwrapped.state["ships"][0]).nonzero()[0].item()
    for _ in range(64):
        step = env.step(torch.tensor([free]))
    assert step.truncated.item() and step.info["episode"]["length"].item() == 64
    assert step.info["episode"]["return"].item() == pytest.approx(-64 / 52)


def test_concentration_rules():
    env = make_task("ConcentrationEasy", 1, seed=11, prev_action=False)  # colours: kinds 0/1, face down = 2
    obs = env.reset()
    assert obs.shape == (1, 156) and (obs.view(52, 3).argmax(-1) == 2).all()
    kinds = torch.arange(52).remainder(2).unsqueeze(0)  # card p has colour p % 2
    env.state["kinds"], env.state["left"] = kinds, torch.zeros(1, 2)
    L = 104

    def shown(o):
        return o.view(52, 3).argmax(-1)

    step = env.step(torch.tensor([0]))
    assert step.reward.item() == 0 and shown(step.obs)[0] == 0 and (shown(step.obs)[1:] == 2).all()
    step = env.step(torch.tensor([1]))  # mismatch: both shown, then turned down
    assert step.reward.item() == pytest.approx(-2 / L) and shown(step.obs)[:2].tolist() == [0, 1]
    step = env.step(torch.tensor([0]))
    step = env.step(torch.tensor([0]))  # the same card twice
    assert step.reward.item() == pytest.approx(-2 / L)
    step = env.step(torch.tensor([0]))
    step = env.step(torch.tensor([2]))  # a pair
    assert step.reward.item() == pytest.approx(1 / 26) and shown(step.obs)[[0, 2]].tolist() == [0, 0]
    step = env.step(torch.tensor([2]))  # a face-up card, alone in play
    assert step.reward.item() == pytest.approx(-1 / L)
    step = env.step(torch.tensor([1]))
    step = env.step(torch.tensor([0]))  # a face-up card with one in play
    assert step.reward.item() == pytest.approx(-2 / L) and shown(step.obs)[1] == 1
    step = env.step(torch.tensor([5]))
    assert shown(step.obs)[1] == 2 and shown(step.obs)[5] == 1  # card 1 went back down
    step = env.step(torch.tensor([1]))  # pairs with card 5, in play
    assert step.reward.item() == pytest.approx(1 / 26)
    rest = [p for p in range(52) if p not in (0, 1, 2, 5)]
    odd, even = [p for p in rest if p % 2], [p for p in rest if p % 2 == 0]
    for a, b in list(zip(odd[::2], odd[1::2])) + list(zip(even[::2], even[1::2])):
        env.step(torch.tensor([a]))
        step = env.step(torch.tensor([b]))
        assert step.reward.item() == pytest.approx(1 / 26)
    assert step.terminated.item()


def test_concentration_deals_a_full_layout_lazily():
    env = make_task("ConcentrationHard", 32, seed=12)
    env.reset()
    for p in range(52):
        env.step(torch.full((32,), p))
    kinds = env.state["kinds"]
    assert (kinds >= 0).all() and (env.state["left"] == 0).all()
    for r in range(13):
        assert ((kinds == r).sum(1) == 4).all()


# ----------------------------------------------------------------- control


def set_cartpole(env: NativeVecEnv, state: np.ndarray) -> None:
    """Put Gymnasium-layout CartPole states ``[B, 4]`` (or one ``[4]``) into a native CartPole env."""
    values = torch.as_tensor(np.asarray(state), dtype=env.dtype).reshape(-1, 4).unbind(-1)
    for key, value in zip(("x", "x_dot", "theta", "theta_dot"), values):
        env.state[key] = value


def gym_cartpole(seed: int) -> gym.Env:
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=seed)
    return env


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_cartpole_physics_equal_gymnasium(dtype, tol):
    env = make_task("CartPole", 1, seed=0, dtype=dtype)
    gen = torch.Generator().manual_seed(13)
    episodes = 0
    for episode in range(20):
        ref = gym_cartpole(episode)
        env.reset()
        set_cartpole(env, ref.state)
        for t in range(500):
            action = torch.randint(0, 2, (1,), generator=gen)
            obs, reward, terminated, truncated, _ = ref.step(int(action))
            step = env.step(action)
            assert np.allclose(step.final_obs.numpy()[0], obs, atol=tol, rtol=0), (episode, t)
            assert step.reward.item() == reward and step.terminated.item() == terminated
            if terminated:
                episodes += 1
                break
    assert episodes == 20


def test_cartpole_same_step_contract_and_truncation():
    env = make_env(EnvConfig(backend="native", id="CartPole", num_envs=16), seed=3)
    obs = env.reset()
    assert obs.shape == (16, 4) and obs.abs().max() <= 0.05
    length = torch.zeros(16, dtype=torch.int64)
    ended = 0
    for t in range(120):
        step = env.step(torch.ones(16, dtype=torch.int64))  # always push right: falls within ~10 steps
        length += 1
        done = step.done
        assert torch.equal(step.is_first, done)
        assert torch.equal(step.info["episode"]["length"][done], length[done])
        assert torch.equal(step.info["episode"]["return"][done], length[done].double())
        if done.any():
            last = step.final_obs[done]
            assert ((last[:, 0].abs() > 2.4) | (last[:, 2].abs() > 12 * 2 * math.pi / 360)).all()
            assert step.obs[done].abs().max() <= 0.05  # the next episode's first obs
            assert not torch.equal(step.obs[done], last)
            ended += int(done.sum())
        assert torch.equal(step.obs[~done], step.final_obs[~done])
        length[done] = 0
    assert ended >= 16
    # a balanced pole is truncated after 500 steps
    env = make_task("CartPole", 2, seed=0, dtype="float64")
    env.reset()
    set_cartpole(env, np.zeros((2, 4)))
    for t in range(500):
        step = env.step((env.state["theta"] * 10 + env.state["theta_dot"] > 0).long())  # a stabilising controller
        assert not step.terminated.any()
    assert step.truncated.all() and step.is_first.all()


@pytest.mark.parametrize("task_id, observed", [("PositionOnlyCartPoleHard", (0, 2)),
                                               ("VelocityOnlyCartPoleMedium", (1, 3))])
def test_partially_observed_cartpole(task_id, observed):
    env = make_task(task_id, 1, seed=0, dtype="float64")
    length = env.max_episode_length
    assert env.time_limit == length and env.observation_space.shape == (2,)
    ref = gym_cartpole(21)
    obs = env.reset()
    names = ("x", "x_dot", "theta", "theta_dot")
    # the first observation shows the same components as the others (POPGym's VelocityOnly shows positions)
    assert torch.equal(obs[0], torch.stack([env.state[names[i]][0] for i in observed]).float())
    set_cartpole(env, ref.state)
    gen = torch.Generator().manual_seed(1)
    total = 0.0
    for t in range(length):
        action = torch.randint(0, 2, (1,), generator=gen)
        full, _, terminated, _, _ = ref.step(int(action))
        step = env.step(action)
        total += step.reward.item()
        assert np.allclose(step.final_obs[0].numpy(), full[list(observed)], atol=1e-6)
        assert step.reward.item() == pytest.approx(1 / length)
        if terminated:
            assert step.terminated.item()
            break
    assert 0 < total <= 1


def test_noisy_position_only_cartpole_noise():
    for level, sigma in zip(LEVELS, (0.1, 0.2, 0.3)):
        env = make_task(f"NoisyPositionOnlyCartPole{level}", 20000, seed=1)
        obs = env.reset()
        true = torch.stack([env.state["x"], env.state["theta"]], -1)
        noise = obs - true
        assert noise[:, 0].std().item() == pytest.approx(sigma, rel=0.05)
        assert obs[:, 1].abs().max() <= 2 * 12 * 2 * math.pi / 360 + 1e-6  # clipped to the bounds
        step = env.step(torch.zeros(20000, dtype=torch.int64))
        assert (step.obs - torch.stack([env.state["x"], env.state["theta"]], -1)).std().item() > sigma / 2


@pytest.mark.parametrize("task_id", ["Pendulum", "PositionOnlyPendulumMedium"])
def test_pendulum_physics_equal_gymnasium(task_id):
    env = make_task(task_id, 1, seed=0, dtype="float64")
    length = env.max_episode_length
    ref = gym.make("Pendulum-v1").unwrapped
    ref.reset(seed=3)
    env.reset()
    env.state["th"], env.state["thdot"] = (torch.tensor([v], dtype=torch.float64) for v in ref.state)
    gen = torch.Generator().manual_seed(2)
    total = 0.0
    for t in range(length):
        action = torch.rand(1, 1, generator=gen) * 6 - 3  # beyond the bounds: clipped to [-2, 2]
        obs, reward, _, _, _ = ref.step(action[0].numpy())
        step = env.step(action)
        if task_id == "Pendulum":
            assert np.allclose(step.final_obs[0].numpy(), obs, atol=1e-5)
            assert step.reward.item() == pytest.approx(reward, abs=1e-5)
        else:
            assert np.allclose(step.final_obs[0].numpy(), obs[:2], atol=1e-5)
            assert step.reward.item() == pytest.approx((reward + 8.1368022) / 8.1368022 / length, abs=1e-6)
            total += step.reward.item()
    assert step.truncated.item() and not step.terminated.item()
    if task_id != "Pendulum":
        assert -1 <= total <= 1


# ------------------------------------------------------------ all tasks at once


@pytest.mark.parametrize("family", POPGYM_FAMILIES)
def test_random_policy_returns_lie_in_minus_one_one(family):
    task_id = family + ("Hard" if family in ("RepeatPrevious", "Autoencode", "CountRecall") else "Easy")
    env = make_env(EnvConfig(backend="native", id=task_id, num_envs=64), seed=0)
    gen = torch.Generator().manual_seed(0)
    env.reset()
    returns = []
    for _ in range(1000):
        step = env.step(random_actions(env.unwrapped, gen))
        ep = step.info["episode"]
        returns.append(ep["return"][ep["done"]])
        assert torch.isfinite(step.obs).all()
        assert (step.reward.abs() <= 1.0).all()
    returns = torch.cat(returns)
    assert returns.numel() >= 64
    # POPGym's Battleship lets misses sum below -1: all misses give -tiles / (tiles - 12)
    low = -64 / 52 if family == "Battleship" else -1.0
    assert (returns >= low - 1e-5).all() and (returns <= 1 + 1e-5).all()


@pytest.mark.parametrize("num_envs", [1, 4096])
def test_every_task_steps_with_one_or_many_envs(num_envs):
    gen = torch.Generator().manual_seed(0)
    for task_id in TASKS:
        if num_envs > 1 and not task_id.endswith("Hard") and task_id not in ("CartPole", "Pendulum"):
            continue
        env = make_task(task_id, num_envs, seed=0)
        obs = env.reset()
        shape = (num_envs, *env.observation_space.shape)
        assert obs.shape == shape and obs.dtype == torch.float32, task_id
        for _ in range(3):
            step = env.step(random_actions(env, gen))
            assert step.obs.shape == shape and step.final_obs.shape == shape, task_id
            assert step.reward.shape == (num_envs,) and step.reward.dtype == torch.float32
            assert step.is_first.dtype == torch.bool and step.is_first.shape == (num_envs,)
            low = torch.as_tensor(env.observation_space.low)
            high = torch.as_tensor(env.observation_space.high)
            assert ((step.obs >= low) & (step.obs <= high)).all(), task_id


def test_episode_boundaries_with_prev_action_and_episode_stats():
    env = make_env(EnvConfig(backend="native", id="RepeatFirstEasy", num_envs=4, kwargs={"prev_action": True}),
                   seed=0)
    assert env.observation_space.shape == (8,)
    obs = env.reset()
    assert (obs[:, 4:] == 0).all()
    for t in range(51):
        step = env.step(torch.full((4,), 2))
        assert step.is_first.tolist() == [t == 50] * 4
        assert (step.final_obs[:, 4:].argmax(-1) == 2).all()
    assert step.terminated.all() and step.info["episode"]["length"].tolist() == [51] * 4
    assert (step.obs[:, 4:] == 0).all() and (step.final_obs[:, 6] == 1).all()
    step = env.step(torch.zeros(4, dtype=torch.int64))
    assert not step.is_first.any() and step.info["episode"]["length"].tolist() == [1] * 4
    # a Box action is appended as it was applied (clipped to the bounds)
    env = make_task("PositionOnlyPendulum", 2, seed=0, prev_action=True, max_episode_length=3)
    assert env.observation_space.shape == (3,) and env.observation_space.high.tolist() == [1, 1, 2]
    assert (env.reset()[:, 2] == 0).all()
    for t in range(3):
        step = env.step(torch.tensor([[5.0], [-0.5]]))
    assert step.final_obs[:, 2].tolist() == [2.0, -0.5] and step.obs[:, 2].tolist() == [0.0, 0.0]
    assert step.truncated.all()


@pytest.mark.parametrize("masked", [False, True])
def test_repeat_previous_over_many_episodes_with_either_reset_path(masked):
    """A memory policy that resets on is_first scores exactly 1 in every episode, whichever way envs reset."""
    env = make_env(EnvConfig(backend="native", id="RepeatPrevious", num_envs=6, kwargs={"k": 3}), seed=4)
    env.unwrapped.masked_reset = masked
    history = torch.zeros(6, 52, dtype=torch.int64)
    t = torch.zeros(6, dtype=torch.int64)
    history[:, 0] = suit(env.reset())
    rows = torch.arange(6)
    returns = []
    for _ in range(51 * 3):
        action = history[rows, (t + 1 - 3).clamp(min=0)]
        step = env.step(action)
        t = torch.where(step.is_first, 0, t + 1)
        history[rows, t] = suit(step.obs)
        ep = step.info["episode"]
        returns.append(ep["return"][ep["done"]])
        assert torch.equal(ep["length"][ep["done"]], torch.full_like(ep["length"][ep["done"]], 51))
    returns = torch.cat(returns)
    assert returns.numel() == 18 and torch.allclose(returns, torch.ones(18, dtype=returns.dtype))


@pytest.mark.parametrize("task_id", ["CartPole", "MineSweeperEasy", "ConcentrationEasy", "BattleshipEasy",
                                     "AutoencodeEasy", "PositionOnlyPendulumEasy"])
def test_masked_reset_path_keeps_the_contract(task_id):
    env = make_task(task_id, 32, seed=1)
    env.masked_reset = True
    gen = torch.Generator().manual_seed(0)
    first = env.reset()
    ended = 0
    for _ in range(250):
        step = env.step(random_actions(env, gen))
        assert torch.equal(step.is_first, step.done)
        assert torch.equal(step.obs[~step.done], step.final_obs[~step.done])
        if step.done.any():
            assert (env.state["t"][step.done] == 0).all() and (env.state["t"][~step.done] > 0).all()
            if task_id == "CartPole":
                assert step.obs[step.done].abs().max() <= 0.05
            elif task_id == "AutoencodeEasy":
                assert (step.obs[step.done][:, 1] == 1).all()  # watch mode
            elif task_id != "PositionOnlyPendulumEasy":  # fixed first observations
                assert torch.equal(step.obs[step.done], first[: int(step.done.sum())])
            ended += int(step.done.sum())
    assert ended >= 32


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("task_id", ["RepeatPreviousEasy", "NoisyPositionOnlyCartPoleEasy", "MineSweeperEasy",
                                     "ConcentrationEasy", "MultiarmedBanditEasy", "PositionOnlyPendulumEasy"])
def test_seeding_is_deterministic_and_envs_differ(task_id):
    def trajectory(seed: int, reseed: int | None = None) -> list[torch.Tensor]:
        env = make_task(task_id, 32, seed=seed)
        gen = torch.Generator().manual_seed(0)
        out = [env.reset(reseed)]
        for _ in range(60):
            step = env.step(random_actions(env, gen))
            out += [step.obs, step.reward, step.final_obs]
        return out

    a, b, c = trajectory(5), trajectory(5), trajectory(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all(torch.equal(x, y) for x, y in zip(a, trajectory(0, reseed=5)))  # reset(seed) reseeds
    first = torch.stack(a[1::3])  # obs over time: env 0 and env 1 see different things
    assert not torch.equal(first[:, 0], first[:, 1])


def test_reset_without_seed_continues_the_stream():
    env = make_task("RepeatFirstEasy", 64, seed=3)
    a = env.reset()
    b = env.reset()
    assert not torch.equal(a, b)
    assert torch.equal(env.reset(seed=3), a)


# ------------------------------------------------------------- against POPGym


def _popgym_deal_order(deck) -> np.ndarray:
    return deck.idx[::-1]  # POPGym deals from the end of the shuffled index array


@pytest.mark.parametrize("name", ["RepeatPreviousEasy", "RepeatFirstEasy", "CountRecallHard", "AutoencodeEasy",
                                  "HigherLowerEasy"])
def test_card_tasks_match_popgym_on_its_own_decks(name):
    envs = pytest.importorskip("popgym.envs")
    gen = torch.Generator().manual_seed(0)
    for seed in range(3):
        ref = getattr(envs, name)()
        ref_obs, _ = ref.reset(seed=seed)
        env = make_task(name, 1, seed=0)
        if name.startswith("CountRecall"):
            values = ref.deck_idx_type[_popgym_deal_order(ref.value_deck)]
            queries = ref.deck_idx_type[_popgym_deal_order(ref.query_deck)]
            cards = np.stack([values, queries], 1).reshape(-1)
        elif name.startswith("HigherLower"):
            cards = ref.deck.ranks_idx[_popgym_deal_order(ref.deck)]
        else:
            cards = ref.deck.suits_idx[_popgym_deal_order(ref.deck)]
        scripted_deal(env, [int(c) for c in cards])
        obs = env.reset()
        assert torch.equal(obs[0], _encode(ref_obs, env))
        while True:
            action = random_actions(env, gen)
            ref_obs, reward, terminated, truncated, _ = ref.step(int(action))
            step = env.step(action)
            assert step.reward.item() == pytest.approx(reward, abs=1e-7)
            assert torch.equal(step.final_obs[0], _encode(ref_obs, env))
            assert step.terminated.item() == terminated and step.truncated.item() == truncated
            if terminated or truncated:
                break


def _encode(obs, env: NativeVecEnv) -> torch.Tensor:
    """POPGym's discrete observation as the native env's concatenated one-hot vector."""
    parts = np.atleast_1d(np.asarray(obs, dtype=np.int64)).tolist()
    sizes = {"CountRecall": [env.observation_space.shape[0] // 2] * 2, "Autoencode": [2, 4]}
    sizes = sizes.get(type(env).__name__, [env.observation_space.shape[0]])
    return torch.cat([torch.nn.functional.one_hot(torch.tensor(p), n).float() for p, n in zip(parts, sizes)])


def test_games_match_popgym_from_its_own_boards():
    envs = pytest.importorskip("popgym.envs")
    gen = np.random.default_rng(0)
    for seed in range(3):
        # MineSweeper: the same board, random clicks
        ref = envs.MineSweeperMedium()
        ref.reset(seed=seed)
        env = make_task("MineSweeperMedium", 1, seed=0, prev_action=False)
        env.reset()
        env.state["mines"] = torch.as_tensor(ref.hidden_grid.reshape(1, -1) == 1)
        env.state["counts"] = torch.as_tensor(ref.neighbor_grid.reshape(1, -1).astype(np.int64))
        for _ in range(40):
            rc = gen.integers(0, 6, 2)
            obs, reward, terminated, truncated, _ = ref.step(rc)
            step = env.step(torch.tensor([int(rc[0] * 6 + rc[1])]))
            assert step.reward.item() == pytest.approx(reward) and step.final_obs[0].argmax().item() == obs
            assert (step.terminated.item(), step.truncated.item()) == (terminated, truncated)
            if terminated or truncated:
                break
        # Battleship: the same ships, random shots
        ref = envs.BattleshipEasy()
        ref.reset(seed=seed)
        env = make_task("BattleshipEasy", 1, seed=0, prev_action=False)
        env.reset()
        env.state["ships"] = torch.as_tensor(ref.board.reshape(1, -1) == 1)
        for _ in range(64):
            rc = gen.integers(0, 8, 2)
            obs, reward, terminated, truncated, _ = ref.step(rc)
            step = env.step(torch.tensor([int(rc[0] * 8 + rc[1])]))
            assert step.reward.item() == pytest.approx(reward) and step.final_obs[0].argmax().item() == obs
            assert step.terminated.item() == terminated and step.done.item() == (terminated or truncated)
            if terminated or truncated:
                break
        # Concentration: the same layout, flips biased toward matching
        ref = envs.ConcentrationEasy()
        ref.reset(seed=seed)
        env = make_task("ConcentrationEasy", 1, seed=0, prev_action=False)
        env.reset()
        env.state["kinds"] = torch.as_tensor(ref.state.reshape(1, -1))
        env.state["left"] = torch.zeros(1, 2)
        for t in range(104):
            action = int(gen.integers(0, 52)) if t % 2 == 0 else int(gen.integers(0, 8))
            obs, reward, terminated, truncated, _ = ref.step(action)
            step = env.step(torch.tensor([action]))
            assert step.reward.item() == pytest.approx(reward)
            assert torch.equal(step.final_obs[0].view(52, 3).argmax(-1), torch.as_tensor(obs))
            assert (step.terminated.item(), step.truncated.item()) == (terminated, truncated)
            if terminated or truncated:
                break


# --------------------------------------------------------------------- PPO


def test_ppo_trains_on_a_native_env(tmp_path):
    from lifelong.run import train

    cfg = load_config(
        str(ROOT / "configs/ppo_cartpole.yaml"),
        ["env.backend=native", "env.id=RepeatPreviousEasy", "env.num_envs=8", "run.total_steps=768",
         "run.eval_every=768", "run.eval_episodes=2", "run.checkpoint_every=0", "run.progress=false",
         "agent.num_steps=32", "agent.minibatch_size=128", "agent.epochs=2"],
    )
    results = train(cfg, tmp_path / "run")
    assert results["steps"] >= 768
    assert (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_ppo_solves_native_cartpole(tmp_path):
    """The default PPO preset reaches 475 on the native CartPole as on EnvPool's."""
    from lifelong.run import train

    cfg = load_config(
        str(ROOT / "configs/ppo_cartpole.yaml"),
        ["env.backend=native", "env.id=CartPole", "run.eval_every=5000", "run.eval_episodes=20",
         "run.stop_return=475", "run.progress=false"],
    )
    results = train(cfg, tmp_path / "run")
    assert results["best_eval"]["mean"] >= 475, results["evals"]
