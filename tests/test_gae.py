"""GAE and the shared linear scan against hand-computed values and a sequential loop."""

import pytest
import torch

from lifelong.agents.ppo import compute_gae
from lifelong.memory.scan import linear_scan, reverse_linear_scan


def test_scan_matches_loop_with_resets():
    gen = torch.Generator().manual_seed(0)
    T, B = 45, 7
    a = torch.rand(T, B, generator=gen)
    a[torch.rand(T, B, generator=gen) < 0.2] = 0.0
    u = torch.randn(T, B, generator=gen)
    h0 = torch.randn(B, generator=gen)
    h, ref = h0, []
    for t in range(T):
        h = a[t] * h + u[t]
        ref.append(h)
    torch.testing.assert_close(linear_scan(a, u, h0), torch.stack(ref))


def test_scan_complex_and_reverse():
    T = 9
    a = torch.polar(torch.full((T, 2), 0.9), torch.full((T, 2), 0.3))
    u = torch.randn(T, 2, dtype=torch.complex64)
    h, ref = torch.zeros(2, dtype=torch.complex64), []
    for t in range(T):
        h = a[t] * h + u[t]
        ref.append(h)
    torch.testing.assert_close(linear_scan(a, u), torch.stack(ref))
    back, ref = torch.zeros(2, dtype=torch.complex64), []
    for t in reversed(range(T)):
        back = a[t] * back + u[t]
        ref.append(back)
    torch.testing.assert_close(reverse_linear_scan(a, u), torch.stack(ref[::-1]))


def test_gae_hand_computed_truncation_and_termination():
    """One env, 4 steps: step 1 truncates (bootstrap V(final)=5 folded in), step 2 terminates."""
    gamma, lam = 0.5, 0.5
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    last_value = torch.tensor([10.0])
    rewards = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    v_final = 5.0
    rewards_boot = rewards.clone()
    rewards_boot[1] += gamma * v_final  # truncated: bootstrap from the true last obs
    dones = torch.tensor([[False], [True], [True], [False]])
    next_values = torch.cat([values[1:], last_value[None]])
    adv, ret = compute_gae(rewards_boot, values, next_values, dones, gamma, lam)
    # by hand, backwards:
    a3 = 1 + 0.5 * 10 - 4  # = 2
    a2 = 1 - 3  # terminated: no bootstrap, no carry = -2
    a1 = 1 + 0.5 * 5 - 2  # truncated: bootstrap from V(final)=5, no carry = 1.5
    a0 = (1 + 0.5 * 2 - 1) + 0.25 * a1  # = 1 + 0.375
    expected = torch.tensor([[a0], [a1], [a2], [a3]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)
    assert a0 == pytest.approx(1.375)
