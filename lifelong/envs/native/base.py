"""``NativeVecEnv``: envs whose whole state is tensors on one device, stepped with batched tensor ops.

A task implements two pure functions over a state dict of ``[B, ...]`` tensors:
``initial_state(n)`` (a fresh state for ``n`` envs, with the first observation under
``"obs"``) and ``transition(state, action)`` (the next state, reward and termination).
The base class owns everything else: the seeded generator, the per-env step counter
``state["t"]``, truncation, same-step autoreset, ``final_obs``, ``is_first`` and the
optional previous-action input.

A parameterized task sets the class attribute ``param_space`` (a ``ParamSpace``) and
implements ``initial_state(n, params)`` instead, with ``params [n, P]`` (float32, on the
device) the pending params of the envs that start an episode (see ``VecEnv``); the base
keeps them in the state under ``"params"`` for the whole episode, so ``transition`` can
read ``state["params"]``.
"""

from __future__ import annotations

import functools
from abc import abstractmethod

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lifelong.envs.base import Step, VecEnv
from lifelong.envs.params import ParamSlots, ParamSpace

State = dict[str, torch.Tensor]


@functools.lru_cache(maxsize=None)
def _identity(n: int, device: torch.device) -> torch.Tensor:
    """The float32 ``n x n`` identity on ``device``, the row table of ``one_hot`` (never written to)."""
    return torch.eye(n, device=device)


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """float32 one-hot of integer ``index [...]`` (values in ``0..n-1``) over ``n`` classes, shape ``[..., n]``.

    Rows of a cached identity picked by ``index_select``: one kernel, about 3x faster on
    CPU than comparing against ``arange``, and unlike ``F.one_hot`` it does not check
    the index range, which would wait for the device on every call.
    """
    rows = _identity(n, index.device).index_select(0, index.reshape(-1).long())
    return rows.view(*index.shape, n)


def one_hot_box(*sizes: int) -> spaces.Box:
    """The Box space of concatenated one-hot encodings of discrete components of ``sizes``."""
    return spaces.Box(0.0, 1.0, (int(sum(sizes)),), np.float32)


def draw_cards(remaining: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Deal one card per env from decks described by ``remaining [B, d]`` (cards left per category, float32).

    Returns the category index ``[B]`` (int64), chosen with probability ``remaining / total``:
    dealing this way one card at a time gives exactly the distribution of dealing from a
    uniformly shuffled deck, without storing or shuffling the deck.
    """
    counts = remaining.cumsum(-1)
    # float64 uniforms have 53 bits, so floor(u * total) is uniform on 0..total-1 to ~1e-13
    u = torch.rand((remaining.shape[0], 1), generator=generator, device=remaining.device, dtype=torch.float64)
    # counts[:, -1] is the total; floor(u * total) is a whole number, exact in float32
    r = u.mul_(counts[:, -1:]).floor_().to(counts.dtype)
    # the category is the number of cumulative counts <= r
    category = torch.searchsorted(counts, r, right=True).squeeze_(1)
    # an empty deck (never dealt from by the tasks) must not produce an out-of-range index
    return category.clamp_(max=remaining.shape[-1] - 1)


class NativeVecEnv(VecEnv):
    """A batch of ``num_envs`` tensor-state envs on ``device`` with same-step autoreset done in torch.

    Randomness comes from one ``torch.Generator`` on ``device`` seeded by ``reset(seed)``;
    every env draws its own numbers from it each step (env ``i`` gets different numbers
    from env ``j``), so trajectories depend on the seed and on ``num_envs``.

    Ended envs are reset inside ``step``: on CPU only the ended rows get a fresh state
    (``nonzero`` costs nothing there); on accelerators (``masked_reset``) a fresh state is
    computed for every row and merged with ``torch.where``, which avoids a host sync per
    step. The two ways draw different random numbers, so a seed's trajectories differ
    between them (and between devices, whose generators differ anyway).

    Actions are int64 ``[B]`` in ``0..n-1`` for Discrete spaces (not range-checked: that
    would wait for the device) and float32 ``[B, *shape]`` for Box spaces (clipped).
    ``time_limit`` truncates episodes after that many steps (``None``: the task's own
    limit). ``prev_action=True`` appends the previous action (one-hot for discrete
    actions, zeros on an episode's first observation) to every observation, as POPGym's
    ``PreviousAction`` wrapper does. ``params`` (parameterized tasks only) replaces the
    task's ``default_params`` (``None``: the middle of ``param_space``) as every env's
    params until ``set_params`` says otherwise.
    """

    default_time_limit: int | None = None
    default_prev_action: bool = False
    param_space: ParamSpace | None = None
    default_params: tuple[float, ...] | None = None

    def __init__(
        self,
        num_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        time_limit: int | None = None,
        prev_action: bool | None = None,
        params: list[float] | torch.Tensor | None = None,
    ) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if time_limit is not None and int(time_limit) < 1:
            raise ValueError(f"time_limit must be >= 1 or null, got {time_limit}")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.action_space = action_space
        self.time_limit = int(time_limit) if time_limit is not None else self.default_time_limit
        self.prev_action = self.default_prev_action if prev_action is None else bool(prev_action)
        act_low, act_high = self._action_bounds()
        self._action_width = act_low.size
        if self.prev_action:
            low = np.concatenate([observation_space.low, act_low]).astype(np.float32)
            high = np.concatenate([observation_space.high, act_high]).astype(np.float32)
            observation_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = observation_space
        self.generator = torch.Generator(device=self.device)
        self._seed = int(seed)
        self._fresh = True  # never reset yet: the first reset() uses the construction seed
        self._state: State | None = None
        # how ended envs are reset; see the class docstring (settable, e.g. to test both paths)
        self.masked_reset = self.device.type != "cpu"
        if isinstance(action_space, spaces.Box):
            self._act_low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
            self._act_high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self._params: ParamSlots | None = None
        if self.param_space is not None:
            default = self.default_params if params is None else params
            default = None if default is None else torch.as_tensor(default, dtype=torch.float32)
            self._params = ParamSlots(self.param_space, self.num_envs, default, self.device)
        elif params is not None:
            raise ValueError(f"params: {type(self).__name__} takes no parameters")

    # ------------------------------------------------------------------ task hooks

    @abstractmethod
    def initial_state(self, n: int) -> State:
        """A fresh state for ``n`` envs (tensors ``[n, ...]``) with the first observation under ``"obs"``.

        Parameterized tasks take ``initial_state(n, params)`` with ``params [n, P]``.
        """

    @abstractmethod
    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        """Apply ``action`` to every env: (next state with its ``"obs"``, reward float32 ``[B]``, terminated ``[B]``).

        ``state["t"]`` holds the number of steps each env has taken in its episode so far.
        Must not modify ``state``'s tensors in place (the caller may still hold them).
        """

    # -------------------------------------------------------------------- the API

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) numbers of ``shape`` from this env's generator, on its device."""
        return torch.rand(shape, generator=self.generator, device=self.device, dtype=dtype)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal numbers of ``shape`` from this env's generator, on its device."""
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=dtype)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Uniform int64 numbers in ``[0, high)`` of ``shape`` from this env's generator."""
        return torch.randint(0, high, shape, generator=self.generator, device=self.device)

    def deal(self, remaining: torch.Tensor) -> torch.Tensor:
        """One card per env from decks with ``remaining [B, d]`` cards per category (see ``draw_cards``)."""
        return draw_cards(remaining, self.generator)

    def deal_first(self, n: int, categories: int, per_category: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first card of ``n`` full decks and what is left: (category ``[n]``, remaining ``[n, categories]``)."""
        full = torch.full((n, categories), float(per_category), device=self.device)
        card = self.deal(full)
        return card, full - one_hot(card, categories)

    @property
    def state(self) -> State:
        """The current state dict (``None`` before the first reset).

        Its tensors must not be changed in place; assigning a new tensor to a key (as the
        tests do to set up a board) changes the state for the next step.
        """
        return self._state

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env (reseeding the generator when ``seed`` is given); return obs ``[B, ...]``."""
        if seed is None and self._fresh:
            seed = self._seed
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._fresh = False
        state = self._initial(self.num_envs)
        self._state = state
        if self.prev_action:
            return torch.cat([state["obs"], self._encode_action(None, self.num_envs)], -1)
        return state["obs"]

    def set_params(self, params: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Pending params for every env or for ``rows`` (see ``VecEnv.set_params``)."""
        if self._params is None:
            return super().set_params(params, rows)
        self._params.set(params, rows)

    @property
    def current_params(self) -> torch.Tensor | None:
        """Params ``[B, P]`` of the running episodes (the pending ones before the first reset)."""
        if self._params is None:
            return None
        return self._params.pending if self._state is None else self._state["params"]

    def step(self, action: torch.Tensor) -> Step:
        """Advance every env by one action; ended envs already show their next episode's first obs."""
        if self._state is None:
            raise RuntimeError("step() called before reset()")
        action = self._prepare_action(action)
        new, reward, terminated = self.transition(self._state, action)
        t = self._state["t"] + 1
        new["t"] = t
        info = {}
        if self._params is not None:
            new["params"] = info["params"] = self._state["params"]
        terminated = terminated.to(torch.bool)
        if self.time_limit is not None:
            truncated = (t >= self.time_limit) & ~terminated
        else:
            truncated = torch.zeros_like(terminated)
        done = terminated | truncated
        final_obs = new["obs"]
        if self.masked_reset:
            fresh = self._initial(self.num_envs)
            new = {k: torch.where(done.view(-1, *([1] * (v.dim() - 1))), fresh[k], v) for k, v in new.items()}
        else:
            rows = done.nonzero().squeeze(1)
            if rows.numel():
                fresh = self._initial(rows.numel(), rows)
                # out of place: the pre-reset tensors (final_obs among them) stay intact
                new = {k: v.index_put((rows,), fresh[k]) for k, v in new.items()}
        self._state = new
        obs = new["obs"]
        if self.prev_action:
            encoded = self._encode_action(action, self.num_envs)
            final_obs = torch.cat([final_obs, encoded], -1)
            obs = torch.cat([obs, encoded.masked_fill(done.unsqueeze(-1), 0.0)], -1)
        return Step(obs, reward.to(torch.float32), terminated, truncated, done, final_obs, info)

    # ------------------------------------------------------------------- helpers

    def _initial(self, n: int, rows: torch.Tensor | None = None) -> State:
        """Fresh states for ``n`` envs: every env (``rows=None``, ``n == num_envs``) or the envs ``rows``."""
        if self._params is None:
            state = self.initial_state(n)
        else:
            params = self._params.pending if rows is None else self._params.pending[rows]
            state = self.initial_state(n, params)
            state["params"] = params
        state["t"] = torch.zeros(n, dtype=torch.int64, device=self.device)
        return state

    def _prepare_action(self, action: torch.Tensor) -> torch.Tensor:
        action = torch.as_tensor(action, device=self.device)
        if isinstance(self.action_space, spaces.Discrete):
            return action.reshape(self.num_envs).to(torch.int64)
        shape = (self.num_envs, *self.action_space.shape)
        return torch.clamp(action.reshape(shape).to(torch.float32), self._act_low, self._act_high)

    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            n = int(space.n)
            return np.zeros(n, np.float32), np.ones(n, np.float32)
        return np.asarray(space.low, np.float32).reshape(-1), np.asarray(space.high, np.float32).reshape(-1)

    def _encode_action(self, action: torch.Tensor | None, n: int) -> torch.Tensor:
        width = self._action_width
        if action is None:
            return torch.zeros(n, width, device=self.device)
        if isinstance(self.action_space, spaces.Discrete):
            return one_hot(action, width)
        return action.reshape(n, width).to(torch.float32)
