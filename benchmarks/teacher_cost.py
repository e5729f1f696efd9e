"""Cost of the curriculum teachers per episode: ``sample(1)`` + ``update`` over a long run.

Every teacher (default settings) drives a deterministic strip student (return grows
with visits to ``0.4 <= x_0 <= 0.6``, zero elsewhere) for ``--episodes`` episodes, one
episode at a time, in a 2-D and a 5-D unit box. Only the teacher's calls are timed,
the student's are not. PLR gets ``|return - 0.5|`` as its score. The table gives the
mean and the worst single episode (a GMM refit or a RIAC split lands in one
episode), the median of the refit episodes for the GMM teachers, the total, and the
mean cost relative to the ``random`` teacher measured in the same process (the peer).
Runs on one torch thread.

    python benchmarks/teacher_cost.py [--episodes 10000] [--dims 2 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from curriculum_students import StripStudent  # noqa: E402
from lifelong.config import build  # noqa: E402
from lifelong.curricula import build_teacher  # noqa: E402
from lifelong.envs.params import ParamSpace  # noqa: E402
from lifelong.registry import TEACHERS  # noqa: E402

PEER = "random"
TEACHER_NAMES = ["random", "alp_gmm", "covar_gmm", "riac", "plr"]


def run_teacher(name: str, dims: int, episodes: int, seed: int = 0) -> dict:
    """Time ``sample(1)`` + ``update`` of teacher ``name`` for every episode; returns the timing summary."""
    space = ParamSpace(tuple(f"p{i}" for i in range(dims)), (0.0,) * dims, (1.0,) * dims)
    cfg = build(TEACHERS.get(name).config, {})
    teacher = build_teacher(cfg, space, seed)
    student = StripStudent()
    seconds = np.zeros(episodes)
    for episode in range(episodes):
        started = time.perf_counter()
        params = teacher.sample(1)
        seconds[episode] += time.perf_counter() - started
        returns = student.run(params)
        extras = {"score": (returns - 0.5).abs(), "level": teacher.last_level_ids} if name == "plr" else None
        started = time.perf_counter()
        teacher.update(params, returns, extras)
        seconds[episode] += time.perf_counter() - started
    refits = None
    if hasattr(cfg, "fit_every"):
        ends = np.arange(1, episodes + 1)
        fit_episodes = (ends >= cfg.bootstrap) & (ends % cfg.fit_every == 0)
        refits = float(np.median(seconds[fit_episodes])) if fit_episodes.any() else None
    return {"mean": float(seconds.mean()), "worst": float(seconds.max()), "total": float(seconds.sum()),
            "refit": refits, "metrics": teacher.metrics()}


def main() -> None:
    """Print one markdown table per parameter dimension."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 5])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dims in args.dims:
        rows = {name: run_teacher(name, dims, args.episodes) for name in TEACHER_NAMES}
        peer = rows[PEER]["mean"]
        print(f"\n### {dims}-D parameter box, {args.episodes} episodes, one at a time\n")
        print("| teacher | mean / episode | worst episode | median refit episode | total | mean vs random |")
        print("|---|---|---|---|---|---|")
        for name, row in rows.items():
            refit = "–" if row["refit"] is None else f"{1e3 * row['refit']:.1f} ms"
            print(f"| {name} | {1e6 * row['mean']:.0f} µs | {1e3 * row['worst']:.1f} ms | {refit} | "
                  f"{row['total']:.2f} s | {row['mean'] / peer:.1f}x |")
        notes = []
        for name in ("alp_gmm", "covar_gmm"):
            notes.append(f"{name}: {rows[name]['metrics']['curriculum/num_components']:.0f} Gaussians at the end")
        notes.append(f"riac: {rows['riac']['metrics']['curriculum/num_regions']:.0f} regions at the end")
        print("\n" + "; ".join(notes) + f". Median over teachers of the mean: "
              f"{1e6 * statistics.median(r['mean'] for r in rows.values()):.0f} µs.")


if __name__ == "__main__":
    main()
