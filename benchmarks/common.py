"""Shared helpers of the benchmarks: run a contender in a fresh process, summarise with medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time


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


def median(rows: list[dict], key: str) -> float | None:
    """Median of ``key`` over the rows that have it."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None
