"""Replay buffers: preallocated, time-major torch rings of transitions and of sequences.

Both buffers store one row per env step for every env at once, in arrays shaped
``[capacity_per_env, num_envs, ...]`` on a given device (``capacity`` is the total
number of transitions and is split evenly across envs, rounding down). Rows follow
the batched-env layout of DESIGN.md: ``reward[t]``, ``terminated[t]`` and
``truncated[t]`` are the result of ``action[t]`` taken at ``obs[t]``.

* ``TransitionReplay`` keeps ``(obs, action, reward, terminated, truncated, next_obs)``
  for off-policy learners that sample single steps. ``next_obs`` must be the true
  successor of ``obs``: ``next_observation(step)`` gives
  ``torch.where(done, step.final_obs, step.obs)``, so a value target bootstraps from
  the final observation on truncation, from nothing on termination (mask with
  ``terminated``), and never from the first observation of the next episode.
* ``SequenceReplay`` keeps ``(obs, action, reward, terminated, truncated, is_first,
  final_obs)`` and, optionally, each env's memory state at every step, for
  recurrent learners and world models that sample windows ``[length, batch, ...]``.

``state_dict()`` holds plain tensors and ints/bools only (loadable with
``torch.load(weights_only=True)``) and contains only the written rows.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lifelong.envs.base import Step
from lifelong.memory.base import State, map_state

Shape = Sequence[int]


def next_observation(step: Step) -> torch.Tensor:
    """The true successor of each env's previous obs: ``final_obs`` where an episode ended, else ``obs``."""
    done = step.done
    done = done.reshape(done.shape + (1,) * (step.obs.dim() - done.dim()))
    return torch.where(done, step.final_obs, step.obs)


def _state_leaves(state: State) -> list[torch.Tensor]:
    """The tensors of a state structure, in ``map_state`` traversal order."""
    leaves: list[torch.Tensor] = []

    def collect(t: torch.Tensor) -> torch.Tensor:
        leaves.append(t)
        return t

    map_state(collect, state)
    return leaves


def _rebuild_state(example: State, leaves: list[torch.Tensor]) -> State:
    """A state with the structure of ``example`` whose tensors are ``leaves`` (in traversal order)."""
    it = iter(leaves)
    return map_state(lambda _: next(it), example)


def _randint(high: int, size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``size`` uniform ints in ``[0, high)`` drawn from ``generator`` (on its device), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(high, (size,), generator=generator, device=gen_device).to(device)


class _TimeRing:
    """Named fields ``[capacity_per_env, num_envs, ...]`` written together one time row per ``add``."""

    def __init__(self, capacity: int, num_envs: int, device: torch.device | str) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be at least 1")
        if capacity < num_envs:
            raise ValueError(
                f"capacity={capacity} must be at least num_envs={num_envs} "
                "(capacity counts transitions and is split evenly across envs)"
            )
        self.num_envs = num_envs
        self.capacity_per_env = capacity // num_envs
        self.device = torch.device(device)
        self.fields: dict[str, torch.Tensor] = {}
        self.pos = 0  # physical time index of the next write
        self.full = False

    def _allocate(self, name: str, shape: Shape, dtype: torch.dtype) -> None:
        self.fields[name] = torch.zeros(
            (self.capacity_per_env, self.num_envs, *shape), dtype=dtype, device=self.device
        )

    def _write(self, values: dict[str, torch.Tensor]) -> None:
        # Check every field before writing any, so a bad call leaves no half-written row.
        for name, value in values.items():
            buf = self.fields[name]
            if tuple(value.shape) != tuple(buf.shape[1:]):
                raise ValueError(
                    f"{name}: expected shape {tuple(buf.shape[1:])} ([num_envs, ...]), got {tuple(value.shape)}"
                )
            if value.is_floating_point() != buf.is_floating_point():
                raise ValueError(f"{name}: expected dtype {buf.dtype}, got {value.dtype}")
        for name, value in values.items():
            self.fields[name][self.pos].copy_(value.detach())
        self.pos += 1
        if self.pos == self.capacity_per_env:
            self.pos = 0
            self.full = True

    @property
    def rows(self) -> int:
        """Time rows written per env (and still held)."""
        return self.capacity_per_env if self.full else self.pos

    def __len__(self) -> int:
        """Transitions held (rows per env times envs)."""
        return self.rows * self.num_envs

    @property
    def nbytes(self) -> int:
        """Bytes of preallocated storage (for logging the buffer size)."""
        return sum(t.numel() * t.element_size() for t in self.fields.values())

    def state_dict(self) -> dict[str, Any]:
        """Written rows (views into the storage: save before the next ``add``) plus the write position."""
        rows = self.rows
        return {
            "capacity_per_env": self.capacity_per_env,
            "num_envs": self.num_envs,
            "pos": self.pos,
            "full": self.full,
            "fields": {name: buf[:rows] for name, buf in self.fields.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned into a buffer built with the same arguments."""
        for key in ("capacity_per_env", "num_envs"):
            if state[key] != getattr(self, key):
                raise ValueError(f"replay state: {key}={state[key]} but this buffer has {key}={getattr(self, key)}")
        pos, full = int(state["pos"]), bool(state["full"])
        if not 0 <= pos < self.capacity_per_env:
            raise ValueError(f"replay state: pos={pos} is outside [0, {self.capacity_per_env})")
        rows = self.capacity_per_env if full else pos
        fields = state["fields"]
        if set(fields) != set(self.fields):
            raise ValueError(f"replay state: fields {sorted(fields)} but this buffer has {sorted(self.fields)}")
        for name, buf in self.fields.items():
            value = fields[name]
            if tuple(value.shape) != (rows, *buf.shape[1:]) or value.dtype != buf.dtype:
                raise ValueError(
                    f"replay state: {name} has shape {tuple(value.shape)} dtype {value.dtype}, "
                    f"expected {(rows, *buf.shape[1:])} dtype {buf.dtype}"
                )
        for name, buf in self.fields.items():
            buf[:rows].copy_(fields[name])
            buf[rows:].zero_()
        self.pos, self.full = pos, full


class TransitionReplay(_TimeRing):
    """Uniform single-step replay of ``(obs, action, reward, terminated, truncated, next_obs)``.

    ``next_obs`` is the true successor of ``obs``: pass ``next_observation(step)``, i.e.
    ``torch.where(done, step.final_obs, step.obs)``. ``terminated`` and ``truncated``
    are stored apart: bootstrap from ``next_obs`` unless ``terminated``.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: Shape,
        action_shape: Shape,
        action_dtype: torch.dtype,
        device: torch.device | str,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(capacity, num_envs, device)
        self._allocate("obs", obs_shape, obs_dtype)
        self._allocate("action", action_shape, action_dtype)
        self._allocate("reward", (), torch.float32)
        self._allocate("terminated", (), torch.bool)
        self._allocate("truncated", (), torch.bool)
        self._allocate("next_obs", obs_shape, obs_dtype)

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """Store one step of every env (each tensor ``[num_envs, ...]``), overwriting the oldest when full."""
        self._write(
            {
                "obs": obs,
                "action": action,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "next_obs": next_obs,
            }
        )

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly (with replacement) among written rows, each ``[batch, ...]``."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if self.rows == 0:
            raise ValueError("cannot sample from an empty TransitionReplay (add steps first)")
        flat = _randint(self.rows * self.num_envs, batch_size, generator, self.device)
        # Every physical row in [0, rows) is written: rows == pos before the first wrap, all rows after.
        time, env = flat // self.num_envs, flat % self.num_envs
        return {name: buf[time, env] for name, buf in self.fields.items()}


_SEQUENCE_FIELDS = ("obs", "action", "reward", "terminated", "truncated", "is_first", "final_obs")


class SequenceReplay(_TimeRing):
    """Replay of time-first env rows sampled as windows ``[length, batch, ...]``, each from a single env.

    Rows are ``(obs, action, reward, terminated, truncated, is_first, final_obs)`` as in the
    batched-env table of DESIGN.md. With ``state_example`` the memory state each env held
    when it acted at ``obs[t]`` (before any reset for ``is_first[t]``) is stored too; every
    state tensor has its env dimension at ``state_batch_dim``. A window is logically
    contiguous in time: it never holds unwritten slots and never runs from the newest row
    into the oldest, but may wrap the physical array end. Windows may cross episode
    boundaries; ``is_first`` marks them and the consumer resets there.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: Shape,
        action_shape: Shape,
        action_dtype: torch.dtype,
        device: torch.device | str,
        state_example: State | None = None,
        state_batch_dim: int = 0,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(capacity, num_envs, device)
        self._allocate("obs", obs_shape, obs_dtype)
        self._allocate("action", action_shape, action_dtype)
        self._allocate("reward", (), torch.float32)
        self._allocate("terminated", (), torch.bool)
        self._allocate("truncated", (), torch.bool)
        self._allocate("is_first", (), torch.bool)
        self._allocate("final_obs", obs_shape, obs_dtype)
        # Keep only the structure (placeholder leaves), not the example's memory.
        self.state_example = (
            map_state(lambda t: torch.empty(0), state_example) if state_example is not None else None
        )
        self.state_batch_dim = state_batch_dim
        self._state_dims: list[int] = []  # env dim of each state leaf, normalised to be non-negative
        leaves = _state_leaves(state_example) if state_example is not None else []
        for i, leaf in enumerate(leaves):
            dim = state_batch_dim % leaf.dim() if leaf.dim() > 0 else None
            if dim is None or leaf.shape[dim] != num_envs:
                raise ValueError(
                    f"state_example tensor {i} has shape {tuple(leaf.shape)}: its env dim "
                    f"state_batch_dim={state_batch_dim} must have size num_envs={num_envs}"
                )
            self._state_dims.append(dim)
            # Stored env-first per row: [capacity_per_env, num_envs, *rest].
            rest = leaf.shape[:dim] + leaf.shape[dim + 1 :]
            self._allocate(f"state.{i}", rest, leaf.dtype)

    @property
    def stores_state(self) -> bool:
        """Whether memory states are stored with each row."""
        return self.state_example is not None

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        is_first: torch.Tensor,
        final_obs: torch.Tensor,
        state: State | None = None,
    ) -> None:
        """Store row t of every env (each tensor ``[num_envs, ...]``) and, if configured, the state at ``obs[t]``."""
        values = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "is_first": is_first,
            "final_obs": final_obs,
        }
        if self.stores_state:
            if state is None:
                raise ValueError("state: this SequenceReplay stores memory states (state_example given); pass state=")
            leaves = _state_leaves(state)
            if len(leaves) != len(self._state_dims):
                raise ValueError(
                    f"state: has {len(leaves)} tensors, expected {len(self._state_dims)} like state_example"
                )
            for i, (leaf, dim) in enumerate(zip(leaves, self._state_dims)):
                values[f"state.{i}"] = leaf.detach().movedim(dim, 0)
        elif state is not None:
            raise ValueError("state: this SequenceReplay was built without state_example, so it stores no state")
        self._write(values)

    def sample(
        self, batch_size: int, length: int, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """``batch_size`` windows of ``length`` consecutive rows, each ``[length, batch, ...]``, plus ``state``.

        Window starts are uniform over every (env, start) whose window fits in the written,
        logically contiguous history. ``state`` (only when states are stored) is the memory
        state at each window's first row, with batch dim ``batch`` at ``state_batch_dim``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if length < 1:
            raise ValueError(f"length={length} must be at least 1")
        rows = self.rows
        if rows < length:
            raise ValueError(
                f"cannot sample windows of length={length}: only {rows} time rows per env are stored "
                f"(capacity_per_env={self.capacity_per_env}); add more steps or shorten the window"
            )
        cap = self.capacity_per_env
        offset = _randint(rows - length + 1, batch_size, generator, self.device)
        env = _randint(self.num_envs, batch_size, generator, self.device)
        oldest = self.pos if self.full else 0
        start = (oldest + offset) % cap  # logical start `offset` rows after the oldest row
        steps = torch.arange(length, device=self.device)
        time = (start.unsqueeze(0) + steps.unsqueeze(1)) % cap  # [length, batch]
        env_tb = env.unsqueeze(0).expand(length, batch_size)
        out: dict[str, Any] = {name: self.fields[name][time, env_tb] for name in _SEQUENCE_FIELDS}
        if self.stores_state:
            leaves = [
                self.fields[f"state.{i}"][start, env].movedim(0, dim) for i, dim in enumerate(self._state_dims)
            ]
            out["state"] = _rebuild_state(self.state_example, leaves)
        return out
