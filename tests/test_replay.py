"""Replay buffers: window validity under wrap-around, stored flags and states, next_obs at episode ends, resume."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.envs.base import Step
from lifelong.replay import SequenceReplay, TransitionReplay, next_observation


def seq_row(t: int, num_envs: int, is_first: torch.Tensor) -> dict[str, torch.Tensor]:
    """Row t for every env: obs = (t, env), so a sampled obs names the step and env it came from."""
    env = torch.arange(num_envs, dtype=torch.float32)
    obs = torch.stack([torch.full((num_envs,), float(t)), env], dim=1)
    return {
        "obs": obs,
        "action": torch.full((num_envs,), t, dtype=torch.int64),
        "reward": torch.full((num_envs,), float(t)) + 0.5 * env,
        "terminated": torch.zeros(num_envs, dtype=torch.bool),
        "truncated": torch.zeros(num_envs, dtype=torch.bool),
        "is_first": is_first,
        "final_obs": obs + 1000.0,
    }


def state_at(t: int, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-tensor state with env dim 1 whose values encode (t, env)."""
    env = torch.arange(num_envs, dtype=torch.float32)
    h = (t * 100.0 + env).view(1, num_envs, 1).expand(2, num_envs, 3).clone()
    c = -h[:1].clone()
    return h, c


@settings(max_examples=120, deadline=None)
@given(
    cap_per_env=st.integers(1, 10),
    num_envs=st.integers(1, 4),
    adds=st.integers(0, 35),
    length=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_windows_are_contiguous_written_single_env(cap_per_env, num_envs, adds, length, seed):
    """Every window is `length` consecutive retained steps of one env; is_first and state are as stored."""
    replay = SequenceReplay(
        cap_per_env * num_envs, num_envs, (2,), (), torch.int64, "cpu",
        state_example=state_at(0, num_envs), state_batch_dim=1,
    )
    flags = torch.Generator().manual_seed(seed)
    is_first_log = []
    for t in range(adds):
        is_first = torch.rand(num_envs, generator=flags) < 0.3
        is_first_log.append(is_first)
        replay.add(**seq_row(t, num_envs, is_first), state=state_at(t, num_envs))
    retained = min(adds, cap_per_env)
    assert len(replay) == retained * num_envs
    gen = torch.Generator().manual_seed(seed)
    if retained < length:
        with pytest.raises(ValueError, match="length"):
            replay.sample(8, length, gen)
        return
    batch = replay.sample(8, length, gen)
    obs = batch["obs"]
    assert obs.shape == (length, 8, 2)
    steps, envs = obs[..., 0].long(), obs[..., 1].long()
    oldest = adds - retained
    assert (steps >= oldest).all() and (steps < adds).all()  # no unwritten or overwritten slot
    assert (steps - steps[:1] == torch.arange(length).unsqueeze(1)).all()  # consecutive: no head crossing
    assert (envs == envs[:1]).all()  # one env per window
    assert torch.equal(batch["action"], steps)
    assert torch.equal(batch["final_obs"], obs + 1000.0)
    stored_first = torch.stack(is_first_log)[steps, envs]
    assert torch.equal(batch["is_first"], stored_first)
    h, c = batch["state"]
    start_step, start_env = steps[0], envs[0]
    expected = (start_step * 100 + start_env).float()
    assert h.shape == (2, 8, 3) and c.shape == (1, 8, 3)
    assert torch.equal(h, expected.view(1, 8, 1).expand(2, 8, 3))
    assert torch.equal(c, -expected.view(1, 8, 1).expand(1, 8, 3))


def test_every_valid_window_start_is_reachable_after_wrap():
    """After wrapping, sampling covers all contiguous starts, including windows across the physical array end."""
    cap, num_envs, length = 5, 2, 3
    replay = SequenceReplay(cap * num_envs, num_envs, (2,), (), torch.int64, "cpu")
    for t in range(13):  # pos = 3: physical order [10, 11, 12, 8, 9]
        replay.add(**seq_row(t, num_envs, torch.zeros(num_envs, dtype=torch.bool)))
    batch = replay.sample(2000, length, torch.Generator().manual_seed(0))
    starts = {(int(s), int(e)) for s, e in zip(batch["obs"][0, :, 0], batch["obs"][0, :, 1])}
    assert starts == {(s, e) for s in (8, 9, 10) for e in range(num_envs)}


def test_state_default_batch_dim_and_single_tensor():
    """A single-tensor state with env dim 0 comes back as the state at each window start."""
    replay = SequenceReplay(12, 3, (2,), (2,), torch.float32, "cpu", state_example=torch.zeros(3, 4))
    for t in range(6):
        row = seq_row(t, 3, torch.zeros(3, dtype=torch.bool))
        row["action"] = torch.zeros(3, 2)
        replay.add(**row, state=(t * 10 + torch.arange(3.0)).unsqueeze(1).expand(3, 4))
    batch = replay.sample(16, 2, torch.Generator().manual_seed(1))
    start = batch["obs"][0]
    assert torch.equal(batch["state"], (start[:, 0] * 10 + start[:, 1]).unsqueeze(1).expand(16, 4))


def test_stored_state_is_a_detached_copy():
    """Changing the caller's state tensor in place after add does not change the stored one."""
    replay = SequenceReplay(4, 1, (2,), (), torch.int64, "cpu", state_example=torch.zeros(1, 2))
    state = torch.ones(1, 2, requires_grad=True)
    replay.add(**seq_row(0, 1, torch.ones(1, dtype=torch.bool)), state=state)
    with torch.no_grad():
        state.mul_(5)
    sampled = replay.sample(1, 1)["state"]
    assert torch.equal(sampled, torch.ones(1, 2)) and not sampled.requires_grad


def test_sequence_bad_input_errors():
    """Wrong shapes, missing states and too-long windows raise ValueError naming the problem."""
    replay = SequenceReplay(8, 2, (2,), (), torch.int64, "cpu", state_example=torch.zeros(2, 3))
    row = seq_row(0, 2, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="state"):
        replay.add(**row)
    with pytest.raises(ValueError, match="obs"):
        replay.add(**{**row, "obs": torch.zeros(3, 2)}, state=torch.zeros(2, 3))
    assert len(replay) == 0  # a rejected add writes nothing
    replay.add(**row, state=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="length=2"):
        replay.sample(4, 2)
    with pytest.raises(ValueError, match="capacity"):
        SequenceReplay(1, 2, (2,), (), torch.int64, "cpu")
    with pytest.raises(ValueError, match="state_batch_dim"):
        SequenceReplay(8, 2, (2,), (), torch.int64, "cpu", state_example=torch.zeros(3, 2))


def test_transition_terminated_truncated_and_next_obs():
    """next_observation uses final_obs where an episode ended; terminated and truncated stay apart."""
    num_envs = 3
    replay = TransitionReplay(30, num_envs, (1,), (), torch.int64, "cpu")
    obs = torch.tensor([[0.0], [10.0], [20.0]])
    # env 0 terminates, env 1 truncates, env 2 continues.
    step = Step(
        obs=torch.tensor([[100.0], [110.0], [21.0]]),  # envs 0 and 1 already reset
        reward=torch.tensor([1.0, 2.0, 3.0]),
        terminated=torch.tensor([True, False, False]),
        truncated=torch.tensor([False, True, False]),
        is_first=torch.tensor([True, True, False]),
        final_obs=torch.tensor([[1.0], [11.0], [21.0]]),
    )
    next_obs = next_observation(step)
    assert torch.equal(next_obs, torch.tensor([[1.0], [11.0], [21.0]]))
    replay.add(obs, torch.tensor([0, 1, 2]), step.reward, step.terminated, step.truncated, next_obs)
    batch = replay.sample(200, torch.Generator().manual_seed(0))
    env = batch["action"]
    assert set(env.tolist()) == {0, 1, 2}
    assert torch.equal(batch["obs"][:, 0], env.float() * 10)
    assert torch.equal(batch["next_obs"][:, 0], env.float() * 10 + 1)
    assert torch.equal(batch["terminated"], env == 0)
    assert torch.equal(batch["truncated"], env == 1)
    assert torch.equal(batch["reward"], env.float() + 1)


def test_transition_samples_only_written_rows_and_wraps():
    """Before a wrap only written rows are sampled; after it only the newest capacity steps."""
    replay = TransitionReplay(8, 2, (1,), (), torch.int64, "cpu")  # 4 rows per env
    with pytest.raises(ValueError, match="empty"):
        replay.sample(1)
    add = lambda t: replay.add(  # noqa: E731
        torch.full((2, 1), float(t)), torch.tensor([0, 1]), torch.zeros(2),
        torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool), torch.full((2, 1), t + 1.0),
    )
    for t in range(3):
        add(t)
    assert len(replay) == 6
    seen = replay.sample(500, torch.Generator().manual_seed(0))
    assert {(int(o), int(a)) for o, a in zip(seen["obs"][:, 0], seen["action"])} == {
        (t, e) for t in range(3) for e in range(2)
    }
    for t in range(3, 7):
        add(t)
    assert len(replay) == 8
    seen = replay.sample(500, torch.Generator().manual_seed(0))
    assert set(seen["obs"][:, 0].long().tolist()) == {3, 4, 5, 6}
    assert torch.equal(seen["next_obs"], seen["obs"] + 1)


def round_trip(state: dict) -> dict:
    """``state`` through torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("adds", [3, 11])  # partial and wrapped
def test_sequence_state_dict_round_trip(adds):
    """A reloaded SequenceReplay holds only written rows and reproduces samples and later adds."""
    def make() -> SequenceReplay:
        return SequenceReplay(
            16, 2, (2,), (), torch.int64, "cpu", state_example=state_at(0, 2), state_batch_dim=1
        )

    replay = make()
    for t in range(adds):
        replay.add(**seq_row(t, 2, torch.tensor([t % 3 == 0, t % 4 == 0])), state=state_at(t, 2))
    saved = round_trip(replay.state_dict())
    assert saved["fields"]["obs"].shape[0] == min(adds, 8)
    restored = make()
    restored.load_state_dict(saved)
    assert len(restored) == len(replay)
    for r in (replay, restored):  # identical behaviour after resuming, including further adds
        r.add(**seq_row(adds, 2, torch.tensor([True, False])), state=state_at(adds, 2))
    a = replay.sample(32, 3, torch.Generator().manual_seed(5))
    b = restored.sample(32, 3, torch.Generator().manual_seed(5))
    for key in ("obs", "action", "reward", "terminated", "truncated", "is_first", "final_obs"):
        assert torch.equal(a[key], b[key]), key
    for x, y in zip(a["state"], b["state"]):
        assert torch.equal(x, y)


def test_transition_state_dict_round_trip_and_mismatch():
    """A reloaded TransitionReplay reproduces samples; a buffer of another size refuses the state."""
    replay = TransitionReplay(6, 2, (1,), (2,), torch.float32, "cpu")
    for t in range(5):
        replay.add(
            torch.full((2, 1), float(t)), torch.rand(2, 2), torch.rand(2),
            torch.tensor([t == 2, False]), torch.tensor([False, t == 4]), torch.full((2, 1), t + 1.0),
        )
    saved = round_trip(replay.state_dict())
    restored = TransitionReplay(6, 2, (1,), (2,), torch.float32, "cpu")
    restored.load_state_dict(saved)
    a = replay.sample(20, torch.Generator().manual_seed(3))
    b = restored.sample(20, torch.Generator().manual_seed(3))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert restored.nbytes == replay.nbytes > 0
    with pytest.raises(ValueError, match="capacity_per_env"):
        TransitionReplay(8, 2, (1,), (2,), torch.float32, "cpu").load_state_dict(saved)
