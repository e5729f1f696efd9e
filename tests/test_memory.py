"""The Memory contract for every registered recurrent module, the resettable scan, and S5/FFM init facts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.config import build
from lifelong.memory.base import Memory, detach_state
from lifelong.memory.ffm import FFMMemory, decay_limit
from lifelong.memory.s5 import S5Memory, hippo_legs_normal
from lifelong.memory.scan import linear_scan, reverse_linear_scan
from lifelong.registry import MEMORY

INPUT_DIM = 5
# Small settings per module; modules not listed here are tested with their defaults.
SMALL = {
    "gru": {"hidden": 8, "layers": 2},
    "lstm": {"hidden": 8, "layers": 2},
    "s5": {"d_model": 8, "state_size": 8, "layers": 2},
    "ffm": {"hidden": 8, "memory_size": 4, "context_size": 3},
}
TOL = {"atol": 2e-5, "rtol": 1e-4}


def make(name: str, seed: int = 0) -> Memory:
    """Module ``name`` with small settings, deterministic parameters."""
    torch.manual_seed(seed)
    entry = MEMORY.get(name)
    raw = {"name": name, **SMALL.get(name, {})}
    return entry.factory(INPUT_DIM, build(entry.config, raw))


RECURRENT = [n for n in MEMORY.names() if make(n).recurrent]


def inputs(steps: int, batch: int, reset_prob: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and a random reset pattern (t=0 resets every env)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, INPUT_DIM, generator=gen)
    is_first = torch.rand(steps, batch, generator=gen) < reset_prob
    is_first[0] = True
    return x, is_first


def warm_state(core: Memory, batch: int) -> object:
    """A non-trivial state: the last state after a short random sequence."""
    x, is_first = inputs(7, batch, 0.0, seed=99)
    with torch.no_grad():
        return core(x, core.initial_state(batch, "cpu"), is_first)[1]


def assert_states_close(a: object, b: object) -> None:
    """Compare two states of the same structure."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, **TOL)
    else:
        for x, y in zip(a, b, strict=True):
            assert_states_close(x, y)


def test_builtin_recurrent_modules_are_registered():
    assert {"gru", "lstm", "s5", "ffm"} <= set(RECURRENT)


@pytest.mark.parametrize("name", RECURRENT)
def test_sequence_equals_step_by_step_with_resets(name):
    core = make(name)
    steps, batch = 40, 4  # past the scan's sequential cut-off, so its chunked path runs
    x, is_first = inputs(steps, batch, 0.1, seed=1)
    is_first[0] = torch.tensor([True, False, True, False])  # some envs continue from the warm state
    state0 = warm_state(core, batch)
    with torch.no_grad():
        y_seq, last_seq = core(x, state0, is_first)
        state, ys = state0, []
        for t in range(steps):
            y, state = core(x[t : t + 1], state, is_first[t : t + 1])
            ys.append(y)
    torch.testing.assert_close(y_seq, torch.cat(ys), **TOL)
    assert_states_close(last_seq, state)
    assert y_seq.shape == (steps, batch, core.output_dim)


@pytest.mark.parametrize("name", RECURRENT)
def test_reset_gives_the_fresh_state_output(name):
    core = make(name)
    steps, batch, cut = 36, 3, 17
    x, is_first = inputs(steps, batch, 0.0, seed=2)
    is_first[cut] = True
    with torch.no_grad():
        y, _ = core(x, warm_state(core, batch), is_first)
        y_fresh, _ = core(x[cut:], core.initial_state(batch, "cpu"), is_first[cut:])
    torch.testing.assert_close(y[cut:], y_fresh, **TOL)


@pytest.mark.parametrize("name", RECURRENT)
def test_no_gradient_crosses_a_reset(name):
    core = make(name)
    steps, batch, cut = 50, 3, 23
    x, is_first = inputs(steps, batch, 0.0, seed=3)
    is_first[cut, 1] = True  # only env 1 resets
    x.requires_grad_(True)
    y, _ = core(x, warm_state(core, batch), is_first)
    (grad,) = torch.autograd.grad(y[cut:, 1].square().sum(), x)
    assert torch.count_nonzero(grad[:cut, 1]) == 0
    assert torch.count_nonzero(grad[cut:, 1]) > 0
    if name in SMALL:  # control for the fully recurrent cores: without the reset, gradient does reach back
        (grad_other,) = torch.autograd.grad(core(x, warm_state(core, batch), is_first)[0][cut:, 0].sum(), x)
        assert torch.count_nonzero(grad_other[:cut, 0]) > 0


@pytest.mark.parametrize("name", RECURRENT)
def test_state_detached_stored_per_env_and_resumed(name):
    core = make(name)
    steps, batch, half = 30, 4, 13
    x, is_first = inputs(steps, batch, 0.08, seed=4)
    with torch.no_grad():
        y_full, last_full = core(x, core.initial_state(batch, "cpu"), is_first)
    y_first, mid = core(x[:half], core.initial_state(batch, "cpu"), is_first[:half])
    # store each env's state row on its own, detached, then resume the envs in another order
    stored = [detach_state(core.select_state(mid, torch.tensor([i]))) for i in range(batch)]
    order = torch.tensor([2, 0, 3, 1])
    resumed = core.concat_states([stored[i] for i in order.tolist()])
    with torch.no_grad():
        y_second, last = core(x[half:, order], resumed, is_first[half:, order])
    torch.testing.assert_close(y_first.detach(), y_full[:half], **TOL)
    torch.testing.assert_close(y_second, y_full[half:, order], **TOL)
    assert_states_close(last, core.select_state(last_full, order))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_input_gradients_match_finite_differences(name):
    core = make(name).double()
    x, is_first = inputs(26, 2, 0.1, seed=9)
    x = x.double().requires_grad_(True)
    state = core.initial_state(2, "cpu")
    assert torch.autograd.gradcheck(lambda inp: core(inp, state, is_first)[0], (x,), fast_mode=True)


def sequential_scan(a: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """The recurrence as a plain loop (the reference)."""
    a, u = torch.broadcast_tensors(a, u)
    h = torch.zeros_like(u[0]) if h0 is None else h0.expand_as(u[0])
    out = [None] * u.shape[0]
    for t in reversed(range(u.shape[0])) if reverse else range(u.shape[0]):
        h = a[t] * h + u[t]
        out[t] = h
    return torch.stack(out)


def random_scan_inputs(steps: int, shape: tuple[int, ...], reset_prob: float, scale: float, seed: int,
                       dtype: torch.dtype = torch.complex64):
    """Complex decays with |a| <= scale, resets (a=0) per row, complex inputs and a start state."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    magnitude = scale * torch.rand(steps, *shape, generator=gen, dtype=real)
    a = torch.polar(magnitude, 2 * math.pi * torch.rand(steps, *shape, generator=gen, dtype=real))
    resets = torch.rand(steps, *shape[:1], generator=gen) < reset_prob
    a = a * (~resets).to(real).view(steps, *shape[:1], *([1] * (len(shape) - 1)))
    u = torch.randn(steps, *shape, generator=gen, dtype=dtype)
    h0 = torch.randn(*shape, generator=gen, dtype=dtype)
    return a, u, h0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.integers(1, 90),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    reset_prob=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    use_h0=st.booleans(),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_scan_matches_sequential_loop(steps, shape, reset_prob, use_h0, reverse, seed):
    a, u, h0 = random_scan_inputs(steps, shape, reset_prob, 1.0, seed)
    h0 = h0 if use_h0 else None
    scan = reverse_linear_scan if reverse else linear_scan
    ref = sequential_scan(a.to(torch.complex128), u.to(torch.complex128),
                          None if h0 is None else h0.to(torch.complex128), reverse)
    torch.testing.assert_close(scan(a, u, h0), ref.to(torch.complex64), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-20])
def test_scan_long_sequences_and_tiny_decays(reverse, scale):
    a, u, h0 = random_scan_inputs(1500, (3, 5), 0.01, scale, seed=5)
    a[:, 0] = scale  # a real, tiny, reset-free row: products underflow long before T
    scan = reverse_linear_scan if reverse else linear_scan
    ref = sequential_scan(a.to(torch.complex128), u.to(torch.complex128), h0.to(torch.complex128), reverse)
    out = scan(a, u, h0)
    assert torch.isfinite(torch.view_as_real(out)).all()
    torch.testing.assert_close(out, ref.to(torch.complex64), atol=1e-4, rtol=1e-4)


def test_scan_real_broadcasting_and_h0_broadcast():
    gen = torch.Generator().manual_seed(6)
    a = torch.rand(70, 1, generator=gen)  # shared decay, broadcast over 4 channels
    u = torch.randn(70, 4, generator=gen)
    h0 = torch.randn(4, generator=gen)
    torch.testing.assert_close(linear_scan(a, u, h0), sequential_scan(a, u, h0, False))
    mixed = linear_scan(a, u.to(torch.complex64))  # real a, complex u: promoted
    torch.testing.assert_close(mixed, sequential_scan(a.to(torch.complex64), u.to(torch.complex64), None, False))


@pytest.mark.parametrize("steps", [3, 60])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_match_the_loop(steps, reverse):
    a, u, h0 = random_scan_inputs(steps, (2, 3), 0.15, 1.0, seed=7, dtype=torch.complex128)
    weights = torch.randn(steps, 2, 3, dtype=torch.complex128)
    grads = []
    for fn in (lambda *t: (reverse_linear_scan if reverse else linear_scan)(*t),
               lambda *t: sequential_scan(*t, reverse)):
        leaves = [t.clone().requires_grad_(True) for t in (a, u, h0)]
        loss = (fn(*leaves) * weights).real.sum()
        grads.append(torch.autograd.grad(loss, leaves))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref)


def test_scan_double_backward():
    a, u, h0 = random_scan_inputs(30, (2,), 0.1, 0.9, seed=8, dtype=torch.complex128)
    leaves = tuple(t.requires_grad_(True) for t in (a, u, h0))
    assert torch.autograd.gradgradcheck(lambda *t: linear_scan(*t), leaves)


def test_s5_init_facts():
    torch.manual_seed(0)
    entry = MEMORY.get("s5")
    cfg = build(entry.config, {"name": "s5", "d_model": 16, "state_size": 32, "layers": 2,
                               "dt_min": 0.002, "dt_max": 0.05})
    core = entry.factory(INPUT_DIM, cfg)
    assert isinstance(core, S5Memory)
    state = core.initial_state(3, "cpu")
    assert state.shape == (2, 3, 16) and state.dtype == torch.complex64  # P = N/2 per layer
    for block in core.blocks:
        ssm = block.ssm
        torch.testing.assert_close(ssm.lambda_re, torch.full((16,), -0.5))
        dt = ssm.log_step.exp()
        assert ((dt >= 0.002 * (1 - 1e-6)) & (dt <= 0.05 * (1 + 1e-6))).all()
        assert ssm.b_tilde.shape == (16, 16, 2) and ssm.c_tilde.shape == (16, 16, 2) and ssm.d.shape == (16,)
        lam_bar, _ = ssm.discretize()
        assert (lam_bar.abs() < 1).all()
    # the normal part of HiPPO-LegS: eigenpairs reconstruct it; its spectrum is closed under conjugation
    eigenvalues, vectors = hippo_legs_normal(32)
    k = torch.arange(32, dtype=torch.float64)
    p = torch.sqrt(2 * k + 1)
    normal = -(torch.tril(p[:, None] * p[None, :]) - torch.diag(k)) + torch.sqrt(k + 0.5)[:, None] * torch.sqrt(
        k + 0.5)[None, :]
    torch.testing.assert_close(vectors @ torch.diag(eigenvalues) @ vectors.conj().T, normal.to(torch.complex128))
    kept, dropped = eigenvalues[:16], eigenvalues[16:]
    torch.testing.assert_close(kept.conj().flip(0), dropped)
    assert (kept.imag < 0).all()
    torch.testing.assert_close(core.blocks[0].ssm.lambda_im.double(), kept.imag, atol=1e-5, rtol=1e-6)


def test_s5_rejects_an_odd_state_size():
    from lifelong.config import ConfigError

    with pytest.raises(ConfigError, match="state_size"):
        build(MEMORY.get("s5").config, {"name": "s5", "state_size": 7})


def test_ffm_init_facts():
    torch.manual_seed(0)
    entry = MEMORY.get("ffm")
    core = entry.factory(INPUT_DIM, build(entry.config, {"name": "ffm", "hidden": 16}))
    assert isinstance(core, FFMMemory)
    limit = decay_limit()
    assert limit == pytest.approx(math.log(torch.finfo(torch.float64).max) / 1024 - 0.01)
    assert limit == pytest.approx(0.6832, abs=1e-3)
    assert core.alpha.shape == (32,) and core.omega.shape == (4,)
    assert core.alpha[0].item() == pytest.approx(-0.6732, abs=1e-3)
    assert core.alpha[-1].item() == pytest.approx(math.log(0.01) / 1024, rel=1e-5)
    assert (core.alpha >= -limit).all() and (core.alpha <= -1e-8).all()
    torch.testing.assert_close(core.omega, 2 * math.pi / torch.linspace(1, 1024, 4))
    gamma = core.gamma()
    assert gamma.shape == (32, 4) and (gamma.abs() < 1).all()
    state = core.initial_state(3, "cpu")
    assert state.shape == (3, 32, 4) and state.dtype == torch.complex64
    assert core.pre.out_features == 2 * 32 + 2 * 16 and core.mix.in_features == 2 * 32 * 4
