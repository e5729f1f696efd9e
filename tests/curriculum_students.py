"""Deterministic synthetic students for the curriculum teachers' tests and benchmark.

A student maps the parameters of an episode to its return and learns from the
episodes it is given. Nothing is random: ALP-based teachers reward noise, so regions
that cannot be learned return exactly zero.
"""

from __future__ import annotations

import numpy as np
import torch


class StripStudent:
    """Competence grows only inside the strip ``strip_low <= x_0 <= strip_high``; zero return elsewhere.

    The return of an episode in the strip is ``min(1, visits / saturation)``, ``visits``
    counting the strip episodes before it.
    """

    def __init__(self, strip_low: float = 0.4, strip_high: float = 0.6, saturation: int = 400) -> None:
        self.strip_low, self.strip_high, self.saturation = strip_low, strip_high, saturation
        self.visits = 0

    def in_strip(self, params: torch.Tensor) -> torch.Tensor:
        """Bool ``[n]``: the rows inside the strip."""
        x = params[:, 0]
        return (x >= self.strip_low) & (x <= self.strip_high)

    def run(self, params: torch.Tensor) -> torch.Tensor:
        """Returns ``[n]`` of episodes ``params [n, P]`` played in order (learning as it goes)."""
        inside = self.in_strip(params).cpu().numpy()
        returns = np.zeros(len(inside))
        for i, hit in enumerate(inside):
            if hit:
                returns[i] = min(1.0, self.visits / self.saturation)
                self.visits += 1
        return torch.as_tensor(returns, dtype=torch.float32)


class GridStudent:
    """A ``side x side`` grid of skills over ``[0, 1]^2`` (or a chain of ``side`` cells over ``[0, 1]`` for 1-D).

    Cell 0 (the corner) is learnable from the start; a cell becomes learnable once a
    neighbour is mastered. An episode in a learnable cell returns ``min(1, visits /
    mastery)`` (``visits`` counting earlier episodes in that cell while learnable) and
    counts as a visit; an episode in a locked cell returns 0 and teaches nothing.
    """

    def __init__(self, side: int = 5, dims: int = 2, mastery: int = 30) -> None:
        self.side, self.dims, self.mastery = side, dims, mastery
        shape = (side,) * dims
        self.visits = np.zeros(shape, dtype=np.int64)
        self.learnable = np.zeros(shape, dtype=bool)
        self.learnable[(0,) * dims] = True

    def cell(self, row: np.ndarray) -> tuple[int, ...]:
        """Grid cell of one params row."""
        return tuple(int(min(self.side - 1, max(0, np.floor(v * self.side)))) for v in row[: self.dims])

    def run(self, params: torch.Tensor) -> torch.Tensor:
        """Returns ``[n]`` of episodes ``params [n, P]`` played in order (learning as it goes)."""
        rows = params.detach().cpu().numpy().astype(np.float64)
        returns = np.zeros(len(rows))
        for i, row in enumerate(rows):
            cell = self.cell(row)
            if not self.learnable[cell]:
                continue
            returns[i] = min(1.0, self.visits[cell] / self.mastery)
            self.visits[cell] += 1
            if self.visits[cell] == self.mastery:
                for axis in range(self.dims):
                    for step in (-1, 1):
                        neighbour = list(cell)
                        neighbour[axis] += step
                        if 0 <= neighbour[axis] < self.side:
                            self.learnable[tuple(neighbour)] = True
        return torch.as_tensor(returns, dtype=torch.float32)

    def mastered(self) -> int:
        """Number of mastered cells."""
        return int((self.visits >= self.mastery).sum())
