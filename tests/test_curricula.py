"""Curriculum teachers: learning on synthetic students, hand-computed PLR weights, exact state round trips."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum_students import GridStudent, StripStudent
from lifelong.config import ConfigError, build
from lifelong.curricula import (
    ALPGMMConfig,
    CovarGMMConfig,
    PLRConfig,
    RandomTeacherConfig,
    RIACConfig,
    build_teacher,
)
from lifelong.curricula.gmm import GaussianMixture, fit_mixtures, select_mixture
from lifelong.curricula.nearest import NearestNeighbourIndex
from lifelong.curricula.riac import window_alp
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS

UNIT_SQUARE = ParamSpace(("x", "y"), (0.0, 0.0), (1.0, 1.0))

# Small settings so fits, splits and replays all happen within a few dozen episodes.
FAST = {
    "random": {},
    "alp_gmm": {"bootstrap": 20, "fit_every": 20, "fit_window": 20, "max_components": 4},
    "covar_gmm": {"bootstrap": 20, "fit_every": 20, "max_components": 4},
    "riac": {"max_region_size": 30, "min_region_points": 3, "split_attempts": 10},
    "plr": {"num_levels": 12},
}
CONFIGS = {"random": RandomTeacherConfig, "alp_gmm": ALPGMMConfig, "covar_gmm": CovarGMMConfig,
           "riac": RIACConfig, "plr": PLRConfig}


def make(name: str, space: ParamSpace = UNIT_SQUARE, seed: int = 0, **overrides):
    raw = {**FAST[name], **overrides}
    return build_teacher(build(CONFIGS[name], raw, "curriculum."), space, seed)


def play(teacher, student, episodes: int, batch: int = 1) -> torch.Tensor:
    """Sample, run and report ``episodes`` episodes in batches; returns every sampled row."""
    rows = []
    for _ in range(0, episodes, batch):
        params = teacher.sample(batch)
        returns = student.run(params)
        teacher.update(params, returns, plr_extras(teacher, returns))
        rows.append(params)
    return torch.cat(rows)


def plr_extras(teacher, returns: torch.Tensor) -> dict | None:
    """Deterministic stand-in PLR scores (|return - 0.5|) with the level ids of the last sample."""
    if teacher.kind != "plr":
        return None
    return {"score": (returns - 0.5).abs(), "level": teacher.last_level_ids}


class ScoreStudent:
    """For PLR and the property test: return = sum of the params' sines, no learning."""

    def run(self, params: torch.Tensor) -> torch.Tensor:
        return params.double().sin().sum(-1).float()


# --------------------------------------------------------------------------- learning behaviour


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alp_gmm_focuses_on_the_learnable_strip(seed):
    teacher = build_teacher(ALPGMMConfig(), UNIT_SQUARE, seed)
    student = StripStudent()
    rows = play(teacher, student, 750)
    inside = student.in_strip(rows).float()
    assert inside[250:].mean() >= 0.6  # after the 250-episode uniform bootstrap
    assert teacher.metrics()["curriculum/num_components"] >= 2


def test_random_teacher_covers_the_strip_by_its_area():
    student = StripStudent()
    rows = play(build_teacher(RandomTeacherConfig(), UNIT_SQUARE, 0), student, 3000, batch=50)
    assert abs(float(student.in_strip(rows).float().mean()) - 0.2) < 0.03


def test_alp_gmm_masters_more_grid_cells_than_random():
    settings_ = {"bootstrap": 100, "fit_every": 100, "fit_window": 100}
    alp, uniform = [], []
    for seed in range(3):
        student = GridStudent(side=5, dims=2, mastery=30)
        play(build_teacher(build(ALPGMMConfig, settings_), UNIT_SQUARE, seed), student, 2000)
        alp.append(student.mastered())
        student = GridStudent(side=5, dims=2, mastery=30)
        play(build_teacher(RandomTeacherConfig(), UNIT_SQUARE, seed), student, 2000, batch=20)
        uniform.append(student.mastered())
    assert min(alp) > max(uniform), (alp, uniform)


def test_alp_is_distance_to_the_nearest_earlier_task():
    teacher = make("alp_gmm", bootstrap=1000, fit_every=1000, fit_window=1000, reward_range=[0.0, 10.0])
    params = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.3, 0.3],
                           [0.52, 0.47], [0.95, 0.95]])
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0, 0.0])
    teacher.update(params, returns)
    # Six earlier episodes are needed; then |r - r(nearest)| on returns scaled by 1/10:
    # (0.52, 0.47) is nearest to (0.5, 0.5): |0.9 - 0.5|; (0.95, 0.95) to (0.9, 0.9): |0.0 - 0.2|.
    np.testing.assert_allclose(teacher.alps, [0, 0, 0, 0, 0, 0, 0.4, 0.2], atol=1e-12)


def test_covar_gmm_rows_and_component_scores():
    teacher = make("covar_gmm", bootstrap=1000, fit_every=4)
    teacher.update(torch.full((3, 2), 0.5), torch.tensor([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(teacher._rows[:3, 2], [0.0, 0.25, 0.5])  # time = position in the period
    np.testing.assert_allclose(teacher._rows[:3, 3], [0.1, 0.2, 0.3])
    cov = np.stack([np.eye(4), np.eye(4), np.eye(4)])
    cov[0, 2, 3] = cov[0, 3, 2] = 0.3
    cov[1, 2, 3] = cov[1, 3, 2] = -0.2
    mixture = GaussianMixture(np.full(3, 1 / 3), np.zeros((3, 4)), cov)
    np.testing.assert_allclose(teacher._score_components(mixture), [0.3, 0.0, 0.0])
    absolute = make("covar_gmm", absolute_lp=True)
    np.testing.assert_allclose(absolute._score_components(mixture), [0.3, 0.2, 0.0])


# --------------------------------------------------------------------------- PLR


def plr_with_scores(scores: dict[int, float], num_levels: int = 5, **overrides):
    teacher = make("plr", num_levels=num_levels, **overrides)
    ids = torch.tensor(list(scores))
    teacher.update(teacher.levels[ids], torch.zeros(len(ids)), {"score": torch.tensor(list(scores.values()))})
    return teacher


def test_plr_replay_weights_match_rank_and_staleness_by_hand():
    teacher = plr_with_scores({0: 0.5, 1: 2.0, 2: 1.0, 3: 0.1})  # level 4 unseen
    # No level sampled yet: every staleness is zero, so P is the rank distribution alone.
    rank = {1: 1, 2: 2, 0: 3, 3: 4}
    h = {i: (1.0 / r) ** 10 for i, r in rank.items()}  # beta = 0.1
    total = sum(h.values())
    expected = [h[0] / total, h[1] / total, h[2] / total, h[3] / total, 0.0]
    np.testing.assert_allclose(teacher.replay_probabilities().numpy(), expected, rtol=1e-12)

    teacher.sample(7)
    drawn = teacher.last_level_ids.tolist()
    c = 7
    last = {i: max([k + 1 for k, lvl in enumerate(drawn) if lvl == i], default=0) for i in range(5)}
    stale = {i: c - last[i] for i in range(4)}
    stale_total = sum(stale.values())
    expected = [0.9 * h[i] / total + 0.1 * stale[i] / stale_total for i in range(4)] + [0.0]
    np.testing.assert_allclose(teacher.replay_probabilities().numpy(), expected, rtol=1e-12)
    assert teacher.replay_decision_probability() == pytest.approx(4 / 5)
    nxt = teacher.next_level_probabilities().numpy()
    np.testing.assert_allclose(nxt, [0.8 * p for p in expected[:4]] + [0.2], rtol=1e-12)
    assert nxt.sum() == pytest.approx(1.0)


def test_plr_rank_ties_go_to_the_lower_id_and_scores_can_be_averaged():
    teacher = plr_with_scores({0: 1.0, 1: 1.0}, num_levels=2, temperature=1.0)
    np.testing.assert_allclose(teacher.replay_probabilities().numpy(), [2 / 3, 1 / 3])
    ema = plr_with_scores({0: 1.0}, num_levels=2, score_alpha=0.25)
    ema.update(ema.levels[:1], torch.zeros(1), {"score": torch.tensor([3.0])})
    assert ema.scores[0] == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)


def test_plr_replays_with_the_seen_fraction_and_samples_by_its_weights():
    teacher = plr_with_scores({i: float(i) for i in range(5)}, num_levels=10, staleness_coef=0.0)
    ids = torch.cat([teacher.sample_with_ids(1)[1] for _ in range(2000)])
    assert abs(float((ids < 5).float().mean()) - 0.5) < 0.04  # replay probability |seen| / |levels|

    full = plr_with_scores({i: float(i) for i in range(4)}, num_levels=4, temperature=1.0, staleness_coef=0.0)
    ids = full.sample_with_ids(4000)[1]
    freq = torch.bincount(ids, minlength=4).double() / len(ids)
    expected = torch.tensor([1 / 4, 1 / 3, 1 / 2, 1.0]) / (1 / 4 + 1 / 3 + 1 / 2 + 1)  # ranks 4, 3, 2, 1
    assert torch.allclose(freq, expected.double(), atol=0.03)


def test_plr_maps_params_to_levels_and_requires_scores():
    teacher = make("plr", num_levels=6)
    params, ids = teacher.sample_with_ids(4)
    teacher.update(params, torch.zeros(4), {"score": torch.arange(4.0)})  # no ids: exact params match
    assert teacher.seen[ids.numpy()].all()
    assert teacher.seen.sum() == len(set(ids.tolist()))
    with pytest.raises(ValueError, match="extras\\['score'\\] is required"):
        teacher.update(params, torch.zeros(4))
    with pytest.raises(ValueError, match="is not one of the teacher's levels"):
        teacher.update(params + 1e-3, torch.zeros(4), {"score": torch.zeros(4)})


# --------------------------------------------------------------------------- state and bounds


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_round_trip_reproduces_the_next_samples_exactly(name):
    original = make(name, seed=0)
    student = StripStudent(saturation=40) if name != "plr" else ScoreStudent()
    play(original, student, 75, batch=3)
    if name in ("alp_gmm", "covar_gmm"):
        assert original.mixture is not None
    if name == "riac":
        assert original.splits >= 1

    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = make(name, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=True))

    twin = copy.deepcopy(student)
    assert torch.equal(original.sample(50), restored.sample(50))
    # Keep going through further fits / splits: both must stay identical.
    rows_a = play(original, student, 45, batch=3)
    rows_b = play(restored, twin, 45, batch=3)
    assert torch.equal(rows_a, rows_b)
    timing = "curriculum/fit_ms"  # wall-clock time of the last fit, the one entry that may differ
    assert {k: v for k, v in original.metrics().items() if k != timing} == \
        {k: v for k, v in restored.metrics().items() if k != timing}
    assert torch.equal(original.sample(50), restored.sample(50))


def test_state_of_another_teacher_or_space_is_refused():
    state = make("alp_gmm").state_dict()
    with pytest.raises(ValueError, match="kind 'alp_gmm' cannot be loaded into a 'riac' teacher"):
        make("riac").load_state_dict(state)
    with pytest.raises(ValueError, match="param space"):
        make("alp_gmm", ParamSpace(("x", "y"), (0.0, 0.0), (2.0, 1.0))).load_state_dict(state)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_density_is_a_distribution_and_leaves_the_random_stream_alone(name):
    teacher = make(name)
    play(teacher, ScoreStudent(), 60, batch=4)
    twin = copy.deepcopy(teacher)
    image = teacher.density(16)
    assert image.shape == (16, 16) and image.dtype == torch.float32
    assert float(image.sum()) == pytest.approx(1.0, abs=1e-5) and float(image.min()) >= 0
    assert torch.equal(teacher.sample(20), twin.sample(20))
    one_d = make(name, ParamSpace(("a",), (-1.0,), (3.0,)))
    assert one_d.density(8).shape == (8,)


def test_random_and_plr_densities_are_exact():
    uniform = make("random").density(4)
    assert torch.allclose(uniform, torch.full((4, 4), 1 / 16))
    teacher = plr_with_scores({0: 1.0, 1: 2.0}, num_levels=3)
    probs = teacher.next_level_probabilities().numpy()
    cells = np.minimum((teacher.levels.numpy() * 4).astype(int), 3)
    expected = np.zeros((4, 4))
    for (i, j), p in zip(cells, probs):
        expected[i, j] += p
    np.testing.assert_allclose(teacher.density(4).numpy(), expected, rtol=1e-6)


space_strategy = st.lists(
    st.tuples(st.floats(-1e3, 1e3), st.floats(0.0, 1e3), st.booleans()), min_size=1, max_size=3
).map(lambda dims: ParamSpace(tuple(f"p{i}" for i in range(len(dims))),
                              tuple(lo for lo, _, _ in dims),
                              tuple(lo if flat else lo + width for lo, width, flat in dims)))


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=space_strategy, seed=st.integers(0, 2**31 - 1),
       returns=st.lists(st.floats(-1e6, 1e6), min_size=60, max_size=60))
def test_samples_never_leave_the_bounds(name, space, seed, returns):
    teacher = make(name, space, seed)
    lo, hi = space.low_tensor(), space.high_tensor()
    for step in range(0, 60, 4):
        params = teacher.sample(4)
        assert params.dtype == torch.float32 and params.shape == (4, space.dim)
        assert bool(((params >= lo) & (params <= hi)).all()), params
        batch = torch.tensor(returns[step : step + 4])
        extras = {"score": batch.abs(), "level": teacher.last_level_ids} if name == "plr" else None
        teacher.update(params, batch, extras)
    params = teacher.sample(200)
    assert bool(space.contains(params).all())


def test_update_rejects_wrong_shapes_with_one_line():
    teacher = make("alp_gmm")
    with pytest.raises(ValueError) as info:
        teacher.update(torch.zeros(3, 5), torch.zeros(3))
    assert "params must have shape [n, 2]" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="returns must have shape \\[3\\]"):
        teacher.update(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="n: 0 is not allowed"):
        teacher.sample(0)


# --------------------------------------------------------------------------- GMM and nearest neighbours


def two_blobs(rng: np.random.Generator) -> np.ndarray:
    a = rng.multivariate_normal([0.0, 0.0], [[0.25, 0.1], [0.1, 0.3]], 300)
    b = rng.multivariate_normal([4.0, 3.0], [[0.1, 0.0], [0.0, 0.6]], 200)
    return np.concatenate([a, b])


def test_em_recovers_a_known_two_component_mixture():
    data = two_blobs(np.random.default_rng(0))
    (mixture,), _ = fit_mixtures(data, [2], np.random.default_rng(1))
    order = np.argsort(mixture.means[:, 0])
    np.testing.assert_allclose(mixture.weights[order], [0.6, 0.4], atol=0.01)
    np.testing.assert_allclose(mixture.means[order], [[0.0, 0.0], [4.0, 3.0]], atol=0.12)
    np.testing.assert_allclose(mixture.covariances[order[0]], [[0.25, 0.1], [0.1, 0.3]], atol=0.06)
    np.testing.assert_allclose(mixture.covariances[order[1]], [[0.1, 0.0], [0.0, 0.6]], atol=0.12)


def test_aic_picks_two_components_and_log_density_is_gaussian():
    data = two_blobs(np.random.default_rng(2))
    best, scores = select_mixture(data, [1, 2, 3, 4, 5], np.random.default_rng(3), "aic")
    assert best.num_components == 2 and int(np.argmin(scores)) == 1
    assert scores[1] == pytest.approx(best.criterion(data, "aic"), rel=1e-9)
    bic_best, _ = select_mixture(data, [1, 2, 3, 4, 5], np.random.default_rng(3), "bic")
    assert bic_best.num_components == 2
    single = GaussianMixture(np.ones(1), np.array([[1.0, -1.0]]), np.array([[[2.0, 0.5], [0.5, 1.0]]]))
    reference = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0], dtype=torch.float64),
                                                       torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64))
    points = data[:10]
    np.testing.assert_allclose(single.score_samples(points), reference.log_prob(torch.from_numpy(points)).numpy())
    assert single.num_parameters() == 2 + 3


def test_nearest_neighbour_index_is_exact_with_ties_and_a_window():
    rng = np.random.default_rng(0)
    for dim, window in ((2, None), (3, None), (2, 200)):
        index = NearestNeighbourIndex(dim, leaf_size=8, min_rebuild=16, max_size=window)
        points = np.round(rng.random((1200, dim)) * 12) / 12  # a coarse lattice: many exact ties
        for i, point in enumerate(points):
            if i:
                first = 0 if window is None else max(0, i - window)
                dist = ((points[first:i] - point) ** 2).sum(1)
                assert index.nearest(point) == first + int(np.flatnonzero(dist == dist.min())[0])
            index.add(point, float(i))
        assert len(index) == (1200 if window is None else 200)


# --------------------------------------------------------------------------- RIAC


def test_riac_splits_a_full_region_into_valid_children():
    teacher = make("riac", max_region_size=200, min_region_points=10, split_attempts=50)
    tasks = torch.rand(201, 2, generator=torch.Generator().manual_seed(0))
    returns = (tasks[:, 0] > 0.5).float() * torch.linspace(0, 1, 201)  # learning on the right half only
    teacher.update(tasks[:200], returns[:200])
    assert len(teacher.regions) == 1 and len(teacher.regions[0].rewards) == 200
    teacher.update(tasks[200:], returns[200:])
    assert len(teacher.regions) == 3
    root, lower, upper = teacher.regions
    assert root.children == (1, 2)
    assert len(lower.rewards) + len(upper.rewards) == 201
    assert min(len(lower.rewards), len(upper.rewards)) >= 10
    for child in (lower, upper):
        assert ((child.high - child.low) >= 1 / 15).all()
    dim, cut = root.split_dim, root.split_value
    assert all(t[dim] <= cut for t in lower.tasks) and all(t[dim] > cut for t in upper.tasks)
    assert root.split_dim == 0  # the cut separates the learning half from the flat half
    assert root.alp == pytest.approx(window_alp(root.rewards, 200))


def test_riac_discards_old_points_when_no_cut_is_valid():
    teacher = make("riac", max_region_size=200, min_region_points=10, split_attempts=50)
    corner = torch.rand(201, 2, generator=torch.Generator().manual_seed(1)) * 0.01  # any 10/10 cut is too thin
    teacher.update(corner, torch.linspace(0, 1, 201))
    assert len(teacher.regions) == 1
    assert len(teacher.regions[0].rewards) == 201 - 50  # a quarter of max_region_size dropped


def test_window_alp_by_hand():
    assert window_alp([0.1, 0.2], 200) == 0.0
    assert window_alp([0.0, 0.0, 1.0], 200) == pytest.approx(1.0)  # halves [0, 0] and [1]
    assert window_alp([5.0, 0.0, 0.0, 1.0, 1.0], 4) == pytest.approx(1.0)  # last 4: [0, 0] vs [1, 1]


# --------------------------------------------------------------------------- configs and registry


@pytest.mark.parametrize(
    "schema, raw, fragment",
    [
        (ALPGMMConfig, {"random_fraction": 1.5}, "curriculum.random_fraction: 1.5 is out of range"),
        (ALPGMMConfig, {"criterion": "aicc"}, "curriculum.criterion: 'aicc' is not allowed; did you mean 'aic'?"),
        (ALPGMMConfig, {"reward_range": [1.0, 0.0]}, "curriculum.reward_range: [1.0, 0.0] is not allowed"),
        (ALPGMMConfig, {"min_components": 5, "max_components": 3}, "curriculum.min_components: 5 is above"),
        (ALPGMMConfig, {"fit_window": 8}, "curriculum.max_components: 10 is above curriculum.fit_window=8"),
        (ALPGMMConfig, {"fit_rate": 100}, "curriculum.fit_rate: unknown key"),
        (CovarGMMConfig, {"fit_every": 5}, "curriculum.max_components: 10 is above curriculum.fit_every=5"),
        (RIACConfig, {"random_fraction": 0.95}, "exceeds 1"),
        (RIACConfig, {"max_region_size": 10}, "curriculum.min_region_points: 10 is too large"),
        (PLRConfig, {"temperature": 0.0}, "curriculum.temperature: 0.0 is out of range (allowed: (0.0, inf])"),
        (PLRConfig, {"num_levels": 2.5}, "curriculum.num_levels: 2.5 is not an int"),
    ],
)
def test_bad_teacher_settings_give_one_line_errors(schema, raw, fragment):
    with pytest.raises(ConfigError) as info:
        build(schema, raw, "curriculum.")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_every_teacher_is_registered_with_its_config():
    for name, schema in CONFIGS.items():
        entry = TEACHERS.get(name)
        assert entry.config is schema and entry.summary
        assert build(schema, {}).name == name
    with pytest.raises(KeyError, match="did you mean 'alp_gmm'"):
        TEACHERS.get("alp-gmm")
    teacher = build_teacher(build(ALPGMMConfig, {"random_fraction": 0.5}), UNIT_SQUARE, 3)
    assert teacher.cfg.random_fraction == 0.5 and math.isclose(teacher.metrics()["curriculum/episodes"], 0.0)
