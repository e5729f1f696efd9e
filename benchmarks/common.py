"""Shared helpers of the benchmarks: run a contender in a fresh process, summarise with medians and a rank test."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def spawn(script: str, name: str, seed: int, *extra: str) -> dict:
    """Run ``script --worker name --seed seed`` in a fresh process; add ``seconds_to_solve`` from spawn."""
    started = time.time()
    proc = subprocess.run([sys.executable, script, "--worker", name, "--seed", str(seed), *extra],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "solved_at" in out:
        out["seconds_to_solve"] = out["solved_at"] - started if out["solved_at"] else None
    return out


def spawn_rotated(script: str, names: Sequence[str], seeds: range, jobs: int,
                  *extra: str) -> Iterator[tuple[str, int, dict]]:
    """``spawn`` every name for every seed, ``jobs`` at a time; yield ``(name, seed, row)`` in submission order.

    The order of the names rotates seed by seed, so machine noise does not favour one of them.
    """
    order = [(names[(seed + i) % len(names)], seed) for seed in seeds for i in range(len(names))]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [(name, seed, pool.submit(spawn, script, name, seed, *extra)) for name, seed in order]
        for name, seed, future in futures:
            yield name, seed, future.result()


def median(rows: list[dict], key: str) -> float | None:
    """Median of ``key`` over the rows that have it."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def rank_test(ours: Sequence[float], peer: Sequence[float], permutations: int = 200_000,
              seed: int = 0) -> tuple[float, float]:
    """Mann-Whitney U of ``ours`` over ``peer`` (ties count 1/2) and its one-sided permutation p-value."""
    pooled = np.asarray([*ours, *peer], dtype=np.float64)
    # midranks: U = (sum of our ranks) - k (k + 1) / 2 for any split of the pooled values
    ordered = np.sort(pooled)
    ranks = (np.searchsorted(ordered, pooled, "left") + np.searchsorted(ordered, pooled, "right") + 1) / 2.0
    k = len(ours)
    observed = ranks[:k].sum() - k * (k + 1) / 2
    gen = np.random.default_rng(seed)
    hits = 0
    for start in range(0, permutations, 10_000):
        draws = gen.random((min(10_000, permutations - start), len(pooled))).argsort(1)[:, :k]
        hits += int((ranks[draws].sum(1) - k * (k + 1) / 2 >= observed - 1e-9).sum())
    return float(observed), hits / permutations
