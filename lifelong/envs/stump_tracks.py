"""Stump Tracks (Portelas et al. 2019): Gymnasium's BipedalWalker on flat ground dotted with stumps.

Each episode's track comes from two parameters, given at reset as
``options={"params": [stump_height, stump_spacing]}``:

* ``stump_height`` in [0, 3]: the mean height of the stumps; each stump's height is
  drawn ``max(0.05, N(mean, 0.1))``, in units of the terrain step (14/30 world units,
  about a fifth of the walker's leg length per unit);
* ``stump_spacing`` in [0, 6]: the gap, in world units, between one stump and the next.

After the start pad, stumps one terrain step wide follow each other every
``TERRAIN_STEP + spacing`` until the end of the track. The walker, its 24-D observation
(hull, joints, contacts, 10 lidar rays, which see the stumps), actions and rewards are
BipedalWalker's: about 300 for reaching the end, -100 for a fall (the hull touching the
ground or a stump). Episodes are truncated after ``max_episode_steps`` (2000, as in the
paper). A task is mastered when the return reaches 230 (``MASTERED_RETURN``);
``stump_tracks_test_set()`` (also ``StumpTracks.test_set()``) gives the fixed 50 test tasks.

Importing this module registers the Gymnasium id ``lifelong/StumpTracks-v0``; with the
``gymnasium`` backend use ``env.id: lifelong/StumpTracks-v0`` and ``env.import:
lifelong.envs.stump_tracks``, or ``env.id: lifelong.envs.stump_tracks:StumpTracks``.
Needs Box2D and pygame (``pip install lifelong[box2d]``; Gymnasium's box2d package imports pygame).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import EzPickle

from lifelong.envs.params import ParamSpace


try:
    from gymnasium.envs.box2d import bipedal_walker as walker
except gym.error.DependencyNotInstalled as e:
    raise gym.error.DependencyNotInstalled(
        f"Stump Tracks needs Box2D and pygame: pip install 'lifelong[box2d]' ({e})"
    ) from e

STUMP_TRACKS_ID = "lifelong/StumpTracks-v0"
STUMP_TRACKS_SPACE = ParamSpace(("stump_height", "stump_spacing"), (0.0, 0.0), (3.0, 6.0))
MASTERED_RETURN = 230.0
HEIGHT_STD = 0.1
MIN_HEIGHT = 0.05
STUMP_COLORS = ((255, 255, 255), (153, 153, 153))
GROUND_COLOR = (102, 153, 76)


def _radical_inverse(index: int, base: int) -> float:
    """The van der Corput number of ``index`` in ``base`` (digits mirrored about the point)."""
    value, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * scale
        scale /= base
    return value


def stump_tracks_test_set() -> torch.Tensor:
    """The fixed 50 test tasks ``[50, 2]`` (stump_height, stump_spacing), spread evenly over the box.

    The points are the Halton sequence in bases 2 and 3 (indices 1..50) scaled to the
    bounds: deterministic without a random generator, and more even than the 50 uniform
    draws of the original code.
    """
    unit = torch.tensor([[_radical_inverse(i, 2), _radical_inverse(i, 3)] for i in range(1, 51)])
    low, high = STUMP_TRACKS_SPACE.low_tensor(), STUMP_TRACKS_SPACE.high_tensor()
    return low + unit * (high - low)


class StumpTracks(walker.BipedalWalker):
    """BipedalWalker whose terrain is flat ground with stumps of per-episode mean height and spacing.

    ``stump_height`` and ``stump_spacing`` are the params used when a reset gives none
    (``default_params``). ``reset(options={"params": p})`` uses ``p`` (ValueError if it
    has the wrong shape or lies outside ``param_space``) for this and, until told
    otherwise, later episodes. After a reset, ``stump_x`` and ``stump_heights`` hold the
    left edge (world units) and height (terrain steps) of every stump.
    """

    param_space = STUMP_TRACKS_SPACE
    mastered_return = MASTERED_RETURN
    test_set = staticmethod(stump_tracks_test_set)

    def __init__(self, render_mode: str | None = None, stump_height: float = 1.5, stump_spacing: float = 3.0,
                 max_episode_steps: int = 2000) -> None:
        super().__init__(render_mode=render_mode, hardcore=False)
        EzPickle.__init__(self, render_mode, stump_height, stump_spacing, max_episode_steps)
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.max_episode_steps = int(max_episode_steps)
        self.default_params = self._checked([stump_height, stump_spacing], "stump_height, stump_spacing")
        self.params = self.default_params.copy()
        self.stump_x = np.zeros(0)
        self.stump_heights = np.zeros(0)
        self._steps = 0

    def _checked(self, params: Any, what: str) -> np.ndarray:
        values = torch.as_tensor(np.asarray(params, dtype=np.float32).reshape(-1))
        return self.param_space.check(values, 1, what)[0].numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode on a new track drawn from ``options["params"]`` (or the last params given)."""
        if options is not None and options.get("params") is not None:
            self.params = self._checked(options["params"], "options['params']")
        obs, info = super().reset(seed=seed, options=options)
        self._steps = 0  # BipedalWalker's reset takes one step to make its first observation
        return obs, {**info, "params": self.params.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """BipedalWalker's step, truncated after ``max_episode_steps``."""
        obs, reward, terminated, truncated, info = super().step(action)
        self._steps += 1
        return obs, reward, terminated, truncated or self._steps >= self.max_episode_steps, info

    def _generate_terrain(self, hardcore: bool) -> None:
        step, ground = walker.TERRAIN_STEP, walker.TERRAIN_HEIGHT
        end = walker.TERRAIN_LENGTH * step
        height_mean, spacing = (float(v) for v in self.params)
        start = walker.TERRAIN_STARTPAD * step
        self.stump_x = np.arange(start, end, step + spacing)
        drawn = self.np_random.normal(height_mean, HEIGHT_STD, size=self.stump_x.size)
        self.stump_heights = np.maximum(MIN_HEIGHT, drawn)
        self.terrain = []
        for x, height in zip(self.stump_x.tolist(), self.stump_heights.tolist()):
            top = ground + height * step
            self.fd_polygon.shape.vertices = [(x, ground), (x + step, ground), (x + step, top), (x, top)]
            stump = self.world.CreateStaticBody(fixtures=self.fd_polygon)
            stump.color1, stump.color2 = STUMP_COLORS
            self.terrain.append(stump)
        # flat ground as BipedalWalker lays it: one edge per terrain step (rendering uses the polygons)
        self.terrain_x = [i * step for i in range(walker.TERRAIN_LENGTH)]
        self.terrain_y = [ground] * walker.TERRAIN_LENGTH
        self.terrain_poly = []
        for i in range(walker.TERRAIN_LENGTH - 1):
            edge = [(self.terrain_x[i], ground), (self.terrain_x[i + 1], ground)]
            self.fd_edge.shape.vertices = edge
            piece = self.world.CreateStaticBody(fixtures=self.fd_edge)
            piece.color1 = piece.color2 = (76, 255 if i % 2 == 0 else 204, 76)
            self.terrain.append(piece)
            self.terrain_poly.append((edge + [(edge[1][0], 0), (edge[0][0], 0)], GROUND_COLOR))
        self.terrain.reverse()


if STUMP_TRACKS_ID not in gym.registry:
    gym.register(STUMP_TRACKS_ID, entry_point="lifelong.envs.stump_tracks:StumpTracks")
