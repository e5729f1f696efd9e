"""Parameterized native tasks for curricula: every episode runs with a parameter vector a teacher chooses.

* ``ParamCartPole``: CartPole-v1 with per-env gravity, pole half-length and cart mass.
* ``ParamRepeatPrevious``: POPGym's RepeatPrevious with per-env delay ``k`` and deck size.
* ``GatedCorridor``: a sparse-reward reach task built as a curriculum benchmark, with an
  easy region, a region learnable only through its mastered neighbours and a region
  whose reward is exactly zero whatever the agent does.

Parameters reach a task through ``NativeVecEnv``'s pending/current params (see
``lifelong.envs.base.VecEnv``): ``initial_state(n, params)`` builds each episode from
its row of ``params``; everything is batched, envs with different parameters step
together.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from lifelong.envs.native.base import NativeVecEnv, State, one_hot, one_hot_box
from lifelong.envs.native.control import (
    FORCE_MAG,
    GRAVITY,
    LENGTH,
    MASSCART,
    MASSPOLE,
    TAU,
    THETA_THRESHOLD,
    X_THRESHOLD,
    CartPole,
)
from lifelong.envs.params import ParamSpace

# ------------------------------------------------------------------ ParamCartPole


def param_cartpole_step(
    x: torch.Tensor,
    x_dot: torch.Tensor,
    theta: torch.Tensor,
    theta_dot: torch.Tensor,
    action: torch.Tensor,
    gravity: torch.Tensor,
    length: torch.Tensor,
    masscart: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """``cartpole_step`` with per-env ``gravity``, pole half-``length`` and ``masscart`` (all ``[B]``).

    Gymnasium's equations in Gymnasium's order of operations, so the default parameters
    give ``cartpole_step``'s numbers. Returns (x, x_dot, theta, theta_dot, terminated).
    """
    force = action.to(x.dtype) * (2 * FORCE_MAG) - FORCE_MAG
    total_mass = MASSPOLE + masscart
    polemass_length = MASSPOLE * length
    costheta = torch.cos(theta)
    sintheta = torch.sin(theta)
    temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / total_mass)
    )
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    x = x + TAU * x_dot
    x_dot = x_dot + TAU * xacc
    theta = theta + TAU * theta_dot
    theta_dot = theta_dot + TAU * thetaacc
    terminated = (x.abs() > X_THRESHOLD) | (theta.abs() > THETA_THRESHOLD)
    return x, x_dot, theta, theta_dot, terminated


class ParamCartPole(CartPole):
    """CartPole-v1 (full state observed, reward 1 per step, 500 steps) with per-episode physics parameters.

    Parameters: ``gravity`` in [4, 20] (m/s^2), ``pole_half_length`` in [0.1, 2.0] (m)
    and ``masscart`` in [0.5, 5.0] (kg); the defaults are Gymnasium's (9.8, 0.5, 1.0).
    The pole's mass, the force and the failure thresholds stay Gymnasium's. A shorter
    pole or stronger gravity makes the pole fall faster (harder); the parameters are
    not observed.
    """

    param_space = ParamSpace(("gravity", "pole_half_length", "masscart"), (4.0, 0.1, 0.5), (20.0, 2.0, 5.0))
    default_params = (GRAVITY, LENGTH, MASSCART)

    def initial_state(self, n: int, params: torch.Tensor) -> State:  # type: ignore[override]
        """CartPole's U(-0.05, 0.05) start state; the physics read ``state["params"]``."""
        return super().initial_state(n)

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        gravity, length, masscart = state["params"].to(self.dtype).unbind(-1)
        *values, terminated = param_cartpole_step(
            state["x"], state["x_dot"], state["theta"], state["theta_dot"], action, gravity, length, masscart
        )
        new = dict(zip(("x", "x_dot", "theta", "theta_dot"), values))
        new["obs"] = self.observe(new)
        return new, self.reward(terminated), terminated


# ------------------------------------------------------------ ParamRepeatPrevious


class ParamRepeatPrevious(NativeVecEnv):
    """POPGym RepeatPrevious with the delay ``k`` and the deck size as per-episode parameters.

    Parameters: ``k`` in [1, 32], rounded to the nearest integer; ``deck_size`` in
    [36, 156], rounded to the nearest multiple of 4 (an equal number of cards per suit;
    ties round to even). Every deck is larger than every ``k``. POPGym's Easy is
    (4, 52), the default. The rules are ``RepeatPrevious``'s: observe the suit of the
    card just dealt, output the suit of the card dealt ``k - 1`` steps earlier; an
    episode deals all ``N`` cards in ``N - 1`` steps, the last ``N - k`` of which reward
    ``+-1 / (N - k)``, so every return lies in [-1, 1] whatever the parameters. Envs with
    different decks step together; the history buffer is padded to the largest ``k``.
    """

    param_space = ParamSpace(("k", "deck_size"), (1.0, 36.0), (32.0, 156.0))
    default_params = (4.0, 52.0)
    max_k = 32

    def __init__(self, num_envs: int, **common) -> None:
        super().__init__(num_envs, one_hot_box(4), spaces.Discrete(4), **common)

    @staticmethod
    def task(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer (k, number of cards) ``[n]`` each row of ``params [n, 2]`` gives."""
        k = params[:, 0].round().long()
        cards = (params[:, 1] / 4).round().long() * 4
        return k, cards

    def initial_state(self, n: int, params: torch.Tensor) -> State:  # type: ignore[override]
        k, cards = self.task(params)
        full = (cards // 4).to(torch.float32).unsqueeze(1).expand(n, 4)
        card = self.deal(full)
        # ring buffer of the last k suits: card c_j lives in slot j % k (slots >= k stay unused)
        history = torch.zeros(n, self.max_k, dtype=torch.uint8, device=self.device)
        history[:, 0] = card.to(torch.uint8)
        return {"remaining": full - one_hot(card, 4), "history": history, "k": k, "cards": cards,
                "obs": one_hot(card, 4)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        t, k, cards = state["t"], state["k"], state["cards"]
        slot = ((t + 1) % k).unsqueeze(1)
        target = state["history"].gather(1, slot).squeeze(1).long()
        sign = torch.where(action == target, 1.0, -1.0)
        reward = torch.where(t >= k - 1, sign / (cards - k), 0.0)
        card = self.deal(state["remaining"])
        dealt = one_hot(card, 4)
        new = {
            "remaining": state["remaining"] - dealt,
            "history": state["history"].scatter(1, slot, card.to(torch.uint8).unsqueeze(1)),
            "k": k,
            "cards": cards,
            "obs": dealt,
        }
        return new, reward, t >= cards - 2


# ------------------------------------------------------------------ GatedCorridor


class GatedCorridor(NativeVecEnv):
    """Reach a target cell past locked gates, with sparse reward: the curriculum benchmark for PPO students.

    The agent starts in cell 0 of a corridor (a wall on its left). Actions: 0 moves one
    cell left, 1 one cell right, ``2 + j`` turns key ``j`` (``keys`` of them). Cells
    ``s, 2s, ...`` below ``D = max_distance`` (``s = gate_spacing``) hold gates: moving
    right out of a gate cell is blocked until the gate's own key is turned there; gate
    ``i``'s key is ``floor(keys * frac(i * 0.618034))`` (a fixed, irregular sequence: a
    policy that opens gate ``i`` does not know gate ``i + 1``'s key). A wrong key does
    nothing, so the agent may try again where it stands; with ``trap_keys`` it is a
    trap instead: the agent is sent back to cell 0 and every gate closes again (the
    clock runs on). An open gate stays open otherwise, and a key turned anywhere but at
    a closed gate does nothing. The target is ``d = 1 + round(distance * (D - 1))``
    cells to the right. Reaching it ends the episode with reward ``1 - 0.5 * steps / T``
    (``T = max_episode_length``, the time limit; at least 0), the only non-zero reward;
    otherwise the episode is truncated after ``T`` steps with return 0. Observation:
    ``(target - position) / D``, ``target / D``, ``position / D`` and 1 if standing at
    a closed gate (``gate_observation: flag``), or instead a one-hot of that gate's index
    over the ``(D - 1) // s`` gates, all zeros elsewhere (``gate_observation: index``).

    Parameters ``(distance, lock)`` in [0, 1]^2 make three regions:

    * ``lock > lock_threshold`` (0.8 by default, so a fifth of the space): locked, the
      reward is exactly 0 at every step whatever the agent does (deterministic, so
      learning-progress teachers see no progress there, and unlearnable); a lower
      ``lock`` changes nothing else;
    * targets before the first gate (``d <= s``, ``distance`` below about 0.1 with the
      defaults): a random walk reaches them often, so they are learnt from scratch;
    * targets behind ``g`` gates: a random policy must find every gate's key, so it
      almost never succeeds past one or two gates (measured with the defaults, in 64
      steps: 82% of episodes for ``d = 4``, 27% for ``d = 7`` (one gate), 5.5% for
      ``d = 10``, 0.7% for ``d = 13``, 0.03% for ``d = 17``, none for ``d = 32``), while
      a policy that has mastered the targets behind ``g - 1`` gates walks to gate ``g``
      and has only that key to find (PPO with an MLP masters ``d = 7`` in 50k steps, and
      gets no reward at all for ``d = 32`` trained alone).

    What the gate index changes: with the flag, an MLP sees which gate it stands at only
    through its position, so sharpening one gate's key carries over to the next gate,
    whose key may differ (with traps that wrong key is never unlearnt); the one-hot index
    gives each gate its own input, so learning a key leaves the others alone.

    What the traps change: without them a policy that walks right and turns keys at
    random passes every gate in about two tries, so once a student walks right its
    sampling policy reaches nearly every target and only its argmax policy (the one
    the test set measures) depends on having learnt the keys; the bands of distances
    then hardly depend on each other for training. With traps that walk-and-guess
    policy passes ``g`` gates in one go with probability ``2^-g`` and each failure
    costs the walk back (measured over 16,384 episodes of 64 steps: 91% for ``d = 10``,
    59% for ``d = 13``, 30% for ``d = 17``, 2.5% for ``d = 32``; a uniformly random
    policy 18%, 2.3%, 0.17%, 0.02% and none for ``d`` = 7, 10, 13, 17, 32), so a band
    needs the keys of the bands before it. docs/benchmarks.md ("Curriculum teachers")
    has the teachers' figures both ways.

    A task is mastered when the episode's return is at least ``mastered_return`` (0.5:
    the target reached within ``T`` steps). ``test_set()`` is the fixed 50-task
    evaluation grid; ``optimal_return(params)`` the best return of each task.
    """

    param_space = ParamSpace(("distance", "lock"), (0.0, 0.0), (1.0, 1.0))
    default_params = (0.1, 0.0)
    mastered_return = 0.5

    def __init__(self, num_envs: int, *, max_distance: int = 32, gate_spacing: int = 4, keys: int = 2,
                 max_episode_length: int = 64, trap_keys: bool = False, lock_threshold: float = 0.8,
                 gate_observation: str = "flag", **common) -> None:
        if gate_observation not in ("flag", "index"):
            raise ValueError(f"gate_observation must be 'flag' or 'index', got {gate_observation!r}")
        self.gate_observation = gate_observation
        if not 0.0 <= float(lock_threshold) <= 1.0:
            raise ValueError(f"lock_threshold must be in [0, 1] (the locked region is lock > lock_threshold), "
                             f"got {lock_threshold}")
        self.lock_threshold = float(lock_threshold)
        if int(max_distance) < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        if int(gate_spacing) < 1:
            raise ValueError(f"gate_spacing must be >= 1, got {gate_spacing}")
        if int(keys) < 1:
            raise ValueError(f"keys must be >= 1, got {keys}")
        self.max_distance = int(max_distance)
        self.gate_spacing = int(gate_spacing)
        self.keys = int(keys)
        self.trap_keys = bool(trap_keys)
        self.num_gates = (self.max_distance - 1) // self.gate_spacing
        if gate_observation == "index" and self.num_gates == 0:
            raise ValueError(f"gate_observation 'index' needs at least one gate (max_distance {self.max_distance}, "
                             f"gate_spacing {self.gate_spacing} make none)")
        least = self.max_distance + self.num_gates
        if int(max_episode_length) < least:
            raise ValueError(
                f"max_episode_length must be >= {least} (max_distance plus one key per gate, or the farthest "
                f"targets are out of reach), got {max_episode_length}"
            )
        self.max_episode_length = int(max_episode_length)
        self.default_time_limit = self.max_episode_length
        # the agent never passes the target: reaching it ends the episode
        width = 3 + (self.num_gates if gate_observation == "index" else 1)
        low = np.zeros(width, np.float32)
        high = np.ones(width, np.float32)
        super().__init__(num_envs, spaces.Box(low, high), spaces.Discrete(2 + self.keys), **common)
        gate = torch.arange(self.num_gates + 1, dtype=torch.float64)
        # index 0 (cell 0, no gate) is never used
        self.gate_keys = (torch.frac(gate * 0.618034) * self.keys).floor().long().to(self.device)

    @classmethod
    def test_set(cls) -> torch.Tensor:
        """The fixed evaluation tasks ``[50, 2]``: distance 0.05..0.95 (10 values) x lock 0.1..0.9 (5 values).

        Rows are ordered lock-major; with the default ``lock_threshold`` the 10 rows with
        lock 0.9 are locked, so at most 40 of the 50 can be mastered (20 with 0.3).
        """
        distance = torch.linspace(0.05, 0.95, 10)
        lock = torch.linspace(0.1, 0.9, 5)
        grid_lock, grid_distance = torch.meshgrid(lock, distance, indexing="ij")
        return torch.stack([grid_distance.reshape(-1), grid_lock.reshape(-1)], -1)

    def target_distance(self, params: torch.Tensor) -> torch.Tensor:
        """The target cell ``d`` ``[n]`` (int64, 1..D) of each row of ``params [n, 2]``."""
        return 1 + (params[:, 0] * (self.max_distance - 1)).round().long()

    def gates_before(self, params: torch.Tensor) -> torch.Tensor:
        """How many gates ``[n]`` lie between the start and each task's target."""
        return (self.target_distance(params) - 1) // self.gate_spacing

    def optimal_return(self, params: torch.Tensor) -> torch.Tensor:
        """The best return ``[n]`` of each task (``d`` moves and one key per gate), or 0 where locked."""
        steps = (self.target_distance(params) + self.gates_before(params)).to(torch.float32)
        best = 1.0 - 0.5 * steps / self.max_episode_length
        return torch.where(params[:, 1] > self.lock_threshold, 0.0, best)

    def _blocked(self, position: torch.Tensor, opened: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(standing at a closed gate, that gate's index) ``[B]``."""
        gate = position // self.gate_spacing
        at_gate = (position % self.gate_spacing == 0) & (gate >= 1) & (gate <= self.num_gates)
        is_open = (opened >> gate.clamp(max=62)) & 1
        return at_gate & (is_open == 0), gate.clamp(max=self.num_gates)

    def _observe(self, position: torch.Tensor, target: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        d = float(self.max_distance)
        where = torch.stack([(target - position) / d, target / d, position / d], -1)
        if self.gate_observation == "flag":
            return torch.cat([where, blocked.to(torch.float32)[:, None]], -1)
        # gate g sits at cell g * s; the one-hot's column g - 1, set only while that gate is closed
        gate = (position // self.gate_spacing - 1).clamp(0, self.num_gates - 1)
        onehot = torch.nn.functional.one_hot(gate, self.num_gates).to(torch.float32) * blocked[:, None]
        return torch.cat([where, onehot], -1)

    def initial_state(self, n: int, params: torch.Tensor) -> State:  # type: ignore[override]
        target = self.target_distance(params)
        position = torch.zeros(n, dtype=torch.int64, device=self.device)
        opened = torch.zeros(n, dtype=torch.int64, device=self.device)
        locked = params[:, 1] > self.lock_threshold
        obs = self._observe(position, target, torch.zeros(n, dtype=torch.bool, device=self.device))
        return {"position": position, "opened": opened, "target": target, "locked": locked, "obs": obs}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        position, opened = state["position"], state["opened"]
        blocked, gate = self._blocked(position, opened)
        unlock = blocked & (action == 2 + self.gate_keys[gate])
        trapped = blocked & (action >= 2) & ~unlock & self.trap_keys
        opened = torch.where(trapped, 0, opened | (unlock.long() << gate))
        move = torch.where(action == 0, -1, torch.where((action == 1) & ~blocked, 1, 0))
        position = torch.where(trapped, 0, (position + move).clamp(min=0))
        target = state["target"]
        reached = position == target
        steps = (state["t"] + 1).to(torch.float32)
        success = (1.0 - 0.5 * steps / self.max_episode_length).clamp(min=0.0)
        reward = torch.where(reached & ~state["locked"], success, 0.0)
        new = {"position": position, "opened": opened, "target": target, "locked": state["locked"],
               "obs": self._observe(position, target, self._blocked(position, opened)[0])}
        return new, reward, reached
