"""``random``: parameters uniform over the box, whatever the outcomes (the baseline every teacher is compared to)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lifelong.config import setting
from lifelong.curricula.base import Teacher, check_count
from lifelong.envs.params import ParamSpace
from lifelong.registry import TEACHERS


@dataclass
class RandomTeacherConfig:
    """Settings of ``curriculum.name: random``."""

    name: str = setting("random", "Teacher.", registry="teachers")


class RandomTeacher(Teacher):
    """Uniform sampling over the parameter box; updates only count episodes."""

    kind = "random"

    def _draw_unit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random((n, self.dim))

    def _update(self, unit: np.ndarray, returns: np.ndarray, params: np.ndarray, extras: dict[str, Any]) -> None:
        pass

    def density(self, resolution: int = 32) -> torch.Tensor:
        """Exact cell masses: uniform, with a zero-width parameter's mass all in its first cell."""
        resolution = check_count(resolution, "resolution")
        dims = min(self.dim, 2)
        per_dim = []
        for i in range(dims):
            mass = np.full(resolution, 1.0 / resolution) if self._width[i] > 0 else np.eye(resolution)[0]
            per_dim.append(mass)
        grid = per_dim[0] if dims == 1 else np.outer(per_dim[0], per_dim[1])
        return torch.as_tensor(grid, dtype=torch.float32).to(self.device)


@TEACHERS.register("random", config=RandomTeacherConfig, summary="Uniform parameters over the box (baseline).")
def make_random_teacher(cfg: RandomTeacherConfig, space: ParamSpace, seed: int,
                        device: torch.device | str = "cpu") -> RandomTeacher:
    """Build the uniform teacher."""
    return RandomTeacher(space, seed, device)
