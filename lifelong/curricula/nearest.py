"""Exact nearest earlier point over a growing history, at a small cost per query.

ALP-GMM needs, for every finished episode, the reward of the nearest previously
sampled task. The reference keeps a scipy ``cKDTree`` rebuilt over the history with a
brute-force buffer of recent points; scipy is not a dependency here, so this module
does the same job in numpy: the indexed part of the history is grouped into leaves of
a k-d tree (median splits on the widest coordinate), each leaf keeps its bounding box,
and a query

1. computes the squared distance lower bound to every leaf box in one array operation,
2. scans the leaf with the smallest bound to get a first candidate distance,
3. scans every leaf whose bound does not exceed that distance (the exact answer lies
   in one of them), and
4. scans the recent points added since the last rebuild by brute force.

The tree is rebuilt when the un-indexed tail grows past ``16 sqrt(indexed)`` points (at
least ``min_rebuild``), which balances the O(N log N) rebuild against the brute-force
scan of the tail. The
answer is exact and independent of the tree's shape: the smallest squared distance,
ties going to the earliest point. Squared distances are accumulated coordinate by
coordinate in a fixed order, so a point's distance is the same float whichever path
scans it.
"""

from __future__ import annotations

import numpy as np


class NearestNeighbourIndex:
    """Points ``[dim]`` with one float value each; ``nearest(q)`` is the earliest closest point."""

    def __init__(self, dim: int, *, leaf_size: int = 128, min_rebuild: int = 256, max_size: int | None = None) -> None:
        self.dim = int(dim)
        self.leaf_size = int(leaf_size)
        self.min_rebuild = int(min_rebuild)
        self.max_size = max_size
        self._points = np.zeros((64, self.dim))
        self._values = np.zeros(64)
        self.count = 0
        self._clear_tree()

    def _clear_tree(self) -> None:
        self._indexed_end = 0  # points [0, _indexed_end) are in the tree
        self._order = np.zeros(0, dtype=np.int64)  # point ids grouped by leaf
        self._leaf_start = np.zeros(0, dtype=np.int64)
        self._leaf_len = np.zeros(0, dtype=np.int64)
        self._box_low = np.zeros((self.dim, 0))  # [dim, leaves]: one contiguous row per coordinate
        self._box_high = np.zeros((self.dim, 0))

    @property
    def start(self) -> int:
        """Id of the oldest point still taking part in queries (``max_size`` drops older ones)."""
        return 0 if self.max_size is None else max(0, self.count - self.max_size)

    def __len__(self) -> int:
        return self.count - self.start

    @property
    def points(self) -> np.ndarray:
        """Every point ever added, ``[count, dim]`` (a view)."""
        return self._points[: self.count]

    @property
    def values(self) -> np.ndarray:
        """The value of every point ever added, ``[count]`` (a view)."""
        return self._values[: self.count]

    def value(self, point_id: int) -> float:
        """The value stored with point ``point_id``."""
        return float(self._values[point_id])

    def add(self, point: np.ndarray, value: float) -> None:
        """Append one point and its value; rebuild the tree when the tail grows too long."""
        if self.count == len(self._points):
            self._points = np.concatenate([self._points, np.zeros_like(self._points)])
            self._values = np.concatenate([self._values, np.zeros_like(self._values)])
        self._points[self.count] = point
        self._values[self.count] = value
        self.count += 1
        tail = self.count - self._indexed_end
        if tail >= max(self.min_rebuild, int(16.0 * np.sqrt(self._indexed_end - self.start))):
            self.rebuild()

    def load(self, points: np.ndarray, values: np.ndarray) -> None:
        """Replace the contents by ``points [n, dim]`` and ``values [n]`` (in insertion order)."""
        n = len(points)
        capacity = max(64, 1 << int(np.ceil(np.log2(max(n, 1)))))
        self._points = np.zeros((capacity, self.dim))
        self._values = np.zeros(capacity)
        self._points[:n] = points
        self._values[:n] = values
        self.count = n
        self._clear_tree()
        if n >= self.min_rebuild:
            self.rebuild()

    def rebuild(self) -> None:
        """Index every live point in a fresh k-d tree of leaves with bounding boxes."""
        start, end = self.start, self.count
        ids = np.arange(start, end)
        points = self._points
        order_parts: list[np.ndarray] = []
        stack = [ids]
        while stack:
            node = stack.pop()
            if len(node) <= self.leaf_size:
                order_parts.append(node)
                continue
            coords = points[node]
            axis = int(np.argmax(coords.max(0) - coords.min(0)))
            half = len(node) // 2
            split = np.argpartition(coords[:, axis], half)
            stack.append(node[split[half:]])
            stack.append(node[split[:half]])
        lengths = np.array([len(p) for p in order_parts], dtype=np.int64)
        self._order = np.concatenate(order_parts) if order_parts else np.zeros(0, dtype=np.int64)
        self._leaf_len = lengths
        self._leaf_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        grouped = points[self._order]
        if len(lengths):
            self._box_low = np.ascontiguousarray(np.minimum.reduceat(grouped, self._leaf_start, axis=0).T)
            self._box_high = np.ascontiguousarray(np.maximum.reduceat(grouped, self._leaf_start, axis=0).T)
        else:
            self._box_low = self._box_high = np.zeros((self.dim, 0))
        self._indexed_end = end

    def _sq_dist(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        pts = self._points[ids]
        dist = (pts[:, 0] - query[0]) ** 2
        for j in range(1, self.dim):
            dist += (pts[:, j] - query[j]) ** 2
        return dist

    @staticmethod
    def _best(ids: np.ndarray, dist: np.ndarray) -> tuple[float, int]:
        best = dist.min()
        return float(best), int(ids[dist == best].min())

    def nearest(self, query: np.ndarray) -> int:
        """Id of the live point closest to ``query`` (earliest among equals); -1 when empty."""
        query = np.asarray(query, np.float64)
        start = self.start
        best_d, best_id = np.inf, -1
        if len(self._leaf_len):
            bound = np.zeros(len(self._leaf_len))
            for j in range(self.dim):
                gap = np.maximum(self._box_low[j] - query[j], 0.0) + np.maximum(query[j] - self._box_high[j], 0.0)
                bound += gap * gap
            first = int(np.argmin(bound))
            s, n = self._leaf_start[first], self._leaf_len[first]
            ids = self._order[s : s + n]
            ids = ids[ids >= start]
            if len(ids):
                best_d, best_id = self._best(ids, self._sq_dist(ids, query))
            # A margin on the bound only adds leaves to scan; it guards the float rounding of the box bound.
            leaves = np.flatnonzero(bound <= best_d * (1.0 + 1e-9) + 1e-300)
            starts, lens = self._leaf_start[leaves], self._leaf_len[leaves]
            total = int(lens.sum())
            if total:
                offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
                ids = self._order[offsets + np.arange(total)]
                ids = ids[ids >= start]
                if len(ids):
                    d, i = self._best(ids, self._sq_dist(ids, query))
                    if d < best_d or (d == best_d and i < best_id):
                        best_d, best_id = d, i
        tail = np.arange(max(self._indexed_end, start), self.count)
        if len(tail):
            d, i = self._best(tail, self._sq_dist(tail, query))
            if d < best_d or (d == best_d and i < best_id):
                best_d, best_id = d, i
        return best_id
