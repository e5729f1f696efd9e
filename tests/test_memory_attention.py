"""Attention cores (GTrXL ``transformer``, ``hcam``): the Memory invariants plus window and top-k checks."""

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.config import ConfigError, load_config
from lifelong.memory.base import detach_state, map_state
from lifelong.memory.hcam import HCAMConfig, HCAMMemory, dense_chunk_weights, top_k_chunk_weights
from lifelong.memory.transformer import TransformerConfig, TransformerMemory
from lifelong.registry import MEMORY

ROOT = Path(__file__).resolve().parent.parent
D_IN, B = 5, 4
WINDOW, CHUNK, CAPACITY, TOP_K = 6, 4, 3, 2
T = 40  # several windows / FIFO turnovers (capacity * chunk = 12 steps)


def make(name: str, **overrides):
    """A small core of either kind, seeded."""
    torch.manual_seed(0)
    if name in ("transformer", "transformer-pos"):
        cfg = TransformerConfig(**{"d_model": 16, "heads": 2, "layers": 2, "window": WINDOW,
                                   "episode_position": name == "transformer-pos", **overrides})
        core = TransformerMemory(D_IN, cfg)
        if core.position is not None:
            with torch.no_grad():  # a trained-looking table (it starts at zero), so the index matters
                core.position.weight.normal_()
        return core
    cfg = HCAMConfig(**{"d_model": 16, "heads": 2, "layers": 2, "chunk_size": CHUNK, "capacity": CAPACITY,
                        "top_k": TOP_K, **overrides})
    return HCAMMemory(D_IN, cfg)


def episode_starts(steps: int, p: float, seed: int) -> torch.Tensor:
    """Random resets; env 0 never resets after t=0 so its memory wraps the window/FIFO."""
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(steps, B, generator=g) < p
    first[0] = True
    first[1:, 0] = False
    return first


def inputs(steps: int, seed: int = 1) -> torch.Tensor:
    """Random inputs ``[steps, B, D_IN]``."""
    return torch.randn(steps, B, D_IN, generator=torch.Generator().manual_seed(seed))


def run_in_pieces(core, x, first, state, cuts):
    """Feed ``x`` in pieces split at ``cuts``, carrying the state; return outputs and the last state."""
    ys = []
    bounds = [0, *sorted(set(cuts)), x.shape[0]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            y, state = core(x[a:b], state, first[a:b])
            ys.append(y)
    return torch.cat(ys), state


def assert_states_close(a, b):
    """Every tensor of two states equal (bool/int exactly, floats within float32 tolerance)."""
    flat_a, flat_b = [], []
    map_state(flat_a.append, a)
    map_state(flat_b.append, b)
    assert len(flat_a) == len(flat_b)
    for u, v in zip(flat_a, flat_b):
        if u.is_floating_point():
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(u, v)


CORES = ["transformer", "transformer-pos", "hcam"]
CACHED = {name: make(name) for name in CORES}  # shared by the property test (no training happens)


@pytest.mark.parametrize("name", CORES)
def test_registered_with_config_and_output_dim(name):
    """Both cores are built from YAML keys through the registry and report their width."""
    base, extra = name.removesuffix("-pos"), ", episode_position: true" if name.endswith("-pos") else ""
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml",
                      [f"agent.memory={{name: {base}, d_model: 32, heads: 4{extra}}}"])
    core = MEMORY.get(base).factory(7, cfg.agent.memory)
    assert core.recurrent and core.output_dim == 32
    y, _ = core(torch.randn(3, 2, 7), core.initial_state(2, "cpu"), torch.ones(3, 2, dtype=torch.bool))
    assert y.shape == (3, 2, 32)
    with pytest.raises(ConfigError, match="heads"):
        load_config(ROOT / "configs/ppo_cartpole.yaml", [f"agent.memory={{name: {base}, d_model: 30, heads: 4}}"])


@pytest.mark.parametrize("name", CORES)
def test_sequence_at_once_equals_step_by_step(name):
    """One call over T steps gives the outputs and final state of T one-step calls."""
    core = make(name)
    x, first = inputs(T), episode_starts(T, 0.06, seed=2)
    y, state = core(x, core.initial_state(B, "cpu"), first)
    y_steps, state_steps = run_in_pieces(core, x, first, core.initial_state(B, "cpu"), range(1, T))
    torch.testing.assert_close(y, y_steps, atol=1e-5, rtol=1e-5)
    assert_states_close(state, state_steps)


@pytest.mark.parametrize("name, overrides", [
    ("transformer", {"window": 1, "layers": 1}),
    ("transformer", {"window": 50}),  # window longer than the sequence
    ("hcam", {"chunk_size": 1, "capacity": 1, "top_k": 1}),
    ("hcam", {"chunk_size": 3, "capacity": 2, "top_k": 5}),  # k above capacity
    ("hcam", {"chunk_size": 7, "capacity": 4, "layers": 1}),
])
def test_edge_sizes_sequence_equals_pieces(name, overrides):
    """Tiny and oversized windows, chunks, capacities and k keep both modes equal."""
    core = make(name, **overrides)
    x, first = inputs(T), episode_starts(T, 0.08, seed=6)
    with torch.no_grad():
        y, state = core(x, core.initial_state(B, "cpu"), first)
        y_steps, state_steps = run_in_pieces(core, x, first, core.initial_state(B, "cpu"), [*range(1, 9), 17, 30])
    torch.testing.assert_close(y, y_steps, atol=1e-5, rtol=1e-5)
    assert_states_close(state, state_steps)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(CORES),
    cuts=st.lists(st.integers(1, T - 1), max_size=6),
    p_reset=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 1000),
)
def test_any_split_of_the_sequence_gives_the_same_outputs(name, cuts, p_reset, seed):
    """Pieces of any lengths (shorter and longer than window/chunk), resets anywhere, same result."""
    core = CACHED[name]
    x, first = inputs(T, seed), episode_starts(T, p_reset, seed)
    first[0] = seed % 2 == 0  # also start from a carried-over (never reset) initial state
    with torch.no_grad():
        y, state = core(x, core.initial_state(B, "cpu"), first)
        y_pieces, state_pieces = run_in_pieces(core, x, first, core.initial_state(B, "cpu"), cuts)
    torch.testing.assert_close(y, y_pieces, atol=1e-5, rtol=1e-5)
    assert_states_close(state, state_pieces)


@pytest.mark.parametrize("name", CORES)
def test_reset_forgets_history_exactly(name):
    """After is_first the output is that of a fresh state, and earlier inputs have no influence at all."""
    core = make(name)
    x, first = inputs(T), torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    resets = torch.tensor([17, 23, 30, 9])  # past a full window / several chunks, mid-chunk too
    first[resets, torch.arange(B)] = True
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    x_other = x.clone()
    for b, t0 in enumerate(resets.tolist()):
        x_other[:t0, b] = torch.randn(t0, D_IN) * 3
    y_other, _ = core(x_other, core.initial_state(B, "cpu"), first)
    for b, t0 in enumerate(resets.tolist()):
        assert torch.equal(y[t0:, b], y_other[t0:, b])
        assert not torch.equal(y[:t0, b], y_other[:t0, b])
        fresh, _ = core(x[t0:, b : b + 1], core.initial_state(1, "cpu"), first[t0:, b : b + 1])
        torch.testing.assert_close(y[t0:, b : b + 1], fresh, atol=1e-5, rtol=1e-5)
    # Step mode: a reset on a state full of history matches a fresh state too.
    _, state = core(x[:20], core.initial_state(B, "cpu"), first[:20])
    restart = torch.ones(5, B, dtype=torch.bool)
    restart[1:] = False
    y_reset, _ = core(x[20:25], state, restart)
    y_fresh, _ = core(x[20:25], core.initial_state(B, "cpu"), restart)
    torch.testing.assert_close(y_reset, y_fresh, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CORES)
def test_no_gradient_across_reset(name):
    """Outputs after is_first have exactly zero gradient with respect to inputs before it."""
    core = make(name)
    x = inputs(T).requires_grad_()
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    resets = [25, 14, 31, 8]
    first[resets, range(B)] = True
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    after = torch.zeros(T, B, 1)
    for b, t0 in enumerate(resets):
        after[t0:, b] = 1
    (y * after).square().sum().backward()
    for b, t0 in enumerate(resets):
        assert torch.count_nonzero(x.grad[:t0, b]) == 0
        assert torch.count_nonzero(x.grad[t0:, b]) > 0


@pytest.mark.parametrize("name", CORES)
def test_no_future_leakage(name):
    """Perturbing x[t+1:] leaves y[:t+1] bit-identical in sequence mode."""
    core = make(name)
    x, first = inputs(T), episode_starts(T, 0.05, seed=3)
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    for t in (0, 3, CHUNK - 1, WINDOW, 19, T - 2):
        x_future = x.clone()
        x_future[t + 1 :] += torch.randn(T - t - 1, B, D_IN)
        y_future, _ = core(x_future, core.initial_state(B, "cpu"), first)
        assert torch.equal(y[: t + 1], y_future[: t + 1])
        assert not torch.equal(y[t + 1 :], y_future[t + 1 :])


@pytest.mark.parametrize("name", CORES)
def test_state_detaches_selects_concatenates_and_resumes(name):
    """A detached state split per env, regrouped and concatenated, resumes exactly like the whole batch."""
    core = make(name)
    x, first = inputs(T).requires_grad_(), episode_starts(T, 0.05, seed=4)
    half = 21
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    _, state = core(x[:half], core.initial_state(B, "cpu"), first[:half])
    state = detach_state(state)
    tensors = []
    map_state(tensors.append, state)
    assert all(t.shape[core.state_batch_dim] == B and not t.requires_grad for t in tensors)
    order = torch.tensor([2, 0, 3, 1])
    parts = [core.select_state(state, order[:2]), core.select_state(state, order[2:])]
    joined = core.concat_states(parts)
    y_rest, _ = core(x[half:, order], joined, first[half:, order])
    torch.testing.assert_close(y_rest, y[half:, order].detach(), atol=1e-5, rtol=1e-5)
    y_rest.sum().backward()
    assert torch.count_nonzero(x.grad[:half]) == 0  # the detached state cuts the graph


def test_top_k_chunk_weights_pure():
    """Only the k best visible chunks get weight, the weights sum to 1; no visible chunk, no weight."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 6, generator=g)
    visible = torch.rand(500, 6, generator=g) < 0.6
    index, weight = top_k_chunk_weights(logits, visible, 2)
    dense = dense_chunk_weights(index, weight, 6)
    n_visible = visible.sum(-1)
    assert torch.equal((dense > 0).sum(-1), n_visible.clamp(max=2))
    assert not (dense[~visible] != 0).any()
    has = n_visible > 0
    torch.testing.assert_close(dense[has].sum(-1), torch.ones(int(has.sum())))
    assert torch.equal(dense[~has], torch.zeros_like(dense[~has]))
    # The picks are the k largest visible logits, weighted by a softmax over those k only.
    masked = logits.masked_fill(~visible, float("-inf"))
    full = n_visible >= 2
    top = masked[full].topk(2, -1)
    torch.testing.assert_close(weight[full], torch.softmax(top.values, -1))


def test_hcam_reads_exactly_top_k_chunks():
    """In the module, a query with at least k stored chunks reads exactly k of them, weights summing to 1."""
    core = make("hcam", capacity=5)
    core.record_chunk_weights()
    x, first = inputs(T), torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    first[30, 1] = True
    core(x, core.initial_state(B, "cpu"), first)
    for layer in core.layers:
        w = layer.last_chunk_weights  # [T, B, capacity]
        assert w.shape == (T, B, 5)
        t = torch.arange(T)[:, None].expand(T, B)
        since = torch.where(t >= 30, t - 30, t) * (torch.arange(B) == 1) + t * (torch.arange(B) != 1)
        stored = (since // CHUNK).clamp(max=5)  # chunks completed before each step in its episode
        assert torch.equal((w > 0).sum(-1), stored.clamp(max=TOP_K))
        has = stored > 0
        torch.testing.assert_close(w.sum(-1)[has], torch.ones(int(has.sum())))
        assert torch.equal(w.sum(-1)[~has], torch.zeros(int((~has).sum())))


def test_hcam_memory_reaches_back_only_through_stored_chunks():
    """With one layer, a step is influenced by an early input only while its chunk is in the FIFO."""
    core = make("hcam", layers=1, top_k=CAPACITY)  # read every stored chunk
    x, first = inputs(T), torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    x2 = x.clone()
    x2[1] += 5.0
    y2, _ = core(x2, core.initial_state(B, "cpu"), first)
    changed = (y - y2).abs().amax((1, 2)) > 0
    # Chunk 0 (steps 0..C-1) is written after step C-1 and pushed out when chunk `capacity` is written.
    last_seen = CHUNK * (CAPACITY + 1) - 1
    assert not changed[0] and changed[1 : last_seen + 1].all()
    assert not changed[last_seen + 1 :].any()


@pytest.mark.parametrize("layers", [1, 2])
def test_transformer_window_bounds_influence(layers):
    """An input more than window steps back has no influence per layer: L layers reach L * window back."""
    core = make("transformer", layers=layers)
    x, first = inputs(T), torch.zeros(T, B, dtype=torch.bool)
    first[0] = True
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    x2 = x.clone()
    x2[2] += 5.0
    y2, _ = core(x2, core.initial_state(B, "cpu"), first)
    changed = (y - y2).abs().amax((1, 2)) > 0
    reach = 2 + layers * WINDOW
    assert changed[2 : reach + 1].all()
    assert not changed[reach + 1 :].any()


def test_transformer_gates_start_near_identity():
    """With the gate bias at 2, a fresh layer changes its input stream only a little."""
    core = make("transformer", layers=1)
    x, first = inputs(T), torch.ones(T, B, dtype=torch.bool)
    h = core.embed(x)
    from lifelong.memory.transformer import BandMask

    mask = BandMask(torch.zeros(WINDOW, B, dtype=torch.bool), first, WINDOW)
    out, kv = core.layers[0](h, torch.zeros(WINDOW, B, 32), mask)  # cached keys and values: 2 * d_model
    assert ((out - h).norm() / h.norm()) < 0.5 and kv.shape == (T, B, 32)


def test_episode_steps_count_from_the_last_reset_across_calls():
    """The episode index of every step, from resets inside a call and from the cache carried between calls."""
    core = make("transformer-pos")
    steps = 3 * WINDOW
    first = torch.zeros(steps, B, dtype=torch.bool)
    first[0, 1:] = True  # env 0 starts from a fresh state without a reset: it still counts from 0
    first[5, 1] = first[9, 2] = first[WINDOW + 4, 3] = True
    expected = torch.zeros(steps, B, dtype=torch.long)
    for b in range(B):
        count = 0
        for t in range(steps):
            count = 0 if first[t, b] else count + (t > 0)
            expected[t, b] = min(count, WINDOW)
    state = core.initial_state(B, "cpu")
    got = []
    for a, b in [(0, 4), (4, 5), (5, 11), (11, steps)]:  # pieces shorter and longer than the window
        got.append(core.episode_steps(state[1], first[a:b]))
        _, state = core(inputs(b - a), state, first[a:b])
    assert torch.equal(torch.cat(got), expected)


def fresh_layer_change(gate_bias: float) -> float:
    """Relative change of the stream by one fresh layer of a transformer built with ``gate_bias``."""
    from lifelong.memory.transformer import BandMask

    core = make("transformer", layers=1, gate_bias=gate_bias)
    x, first = inputs(T), torch.ones(T, B, dtype=torch.bool)
    h = core.embed(x)
    mask = BandMask(torch.zeros(WINDOW, B, dtype=torch.bool), first, WINDOW)
    out, _ = core.layers[0](h, torch.zeros(WINDOW, B, 32), mask)
    return float(((out - h).norm() / h.norm()).detach())


def test_transformer_gate_bias_sets_how_open_a_fresh_layer_is():
    """``gate_bias`` reaches both gates of every layer; 0 lets a fresh layer change the stream much more than 2."""
    core = make("transformer", gate_bias=0.5)
    for layer in core.layers:
        assert torch.equal(layer.gate_attn.update_bias, torch.full((16,), 0.5))
        assert torch.equal(layer.gate_ff.update_bias, torch.full((16,), 0.5))
    assert fresh_layer_change(0.0) > 2 * fresh_layer_change(2.0)


@pytest.mark.parametrize("name", CORES)
def test_every_parameter_gets_a_gradient(name):
    """Training signal reaches all weights (HCAM's key projections through the query side)."""
    core = make(name)
    x, first = inputs(T), episode_starts(T, 0.05, seed=5)
    y, _ = core(x, core.initial_state(B, "cpu"), first)
    y.square().mean().backward()
    for pname, p in core.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname
