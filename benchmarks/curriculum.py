"""Curriculum teachers on GatedCorridor: percent of the 50-task test set a PPO student masters.

Every teacher (random, alp_gmm, riac, covar_gmm, plr) trains the same PPO student
(configs/ppo_alp_gmm_gated_corridor.yaml with only ``curriculum.teacher.name`` changed;
each teacher keeps its published defaults) for the same number of env steps, once per
seed, each run in a fresh subprocess. Runs go two at a time (``--jobs``) and the teacher
order rotates seed by seed, so machine noise does not favour one teacher.

``mastered`` is ``results.json``'s ``curriculum_tests``: the fraction of GatedCorridor's
fixed 50 test tasks the deterministic (argmax) policy reaches within the time limit, at
every evaluation (10 test tasks are locked, so 80% is the most possible; with
``env.kwargs={lock_threshold: 0.3}`` 30 are, and 40% is). Printed per
teacher: the final and best-over-evaluations mastered percent (mean and min..max over
seeds), the ratio of the mean final mastered percent to random's, and the training
seconds per run (evaluation excluded) against random's: the teacher's wall overhead, and a
rank test of each teacher's final mastered percent against random's (Mann-Whitney U, and the
one-sided p of U at least that large when the teacher labels are permuted).

    python benchmarks/curriculum.py [--seeds 3] [--first-seed 0] [--steps 1000000] [--jobs 2] [--teachers random,alp_gmm]
                                    [--config configs/ppo_alp_gmm_gated_corridor.yaml] [--set KEY=VALUE ...]

``--config configs/ppo_alp_gmm_gated_corridor_traps.yaml`` (with ``--steps 100000``) is the
variant with traps, gate indices and a 70% locked region.

``--set`` adds config overrides to every run (another env variant or student, for example
``--set "env.kwargs={trap_keys: true}" --set agent.gamma=0.95 --set agent.ent_coef=0.01``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rank_test, spawn_rotated  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs/ppo_alp_gmm_gated_corridor.yaml"
TEACHERS = ("random", "alp_gmm", "riac", "covar_gmm", "plr")


def run_teacher(teacher: str, seed: int, steps: int, evals: int, overrides: Sequence[str] = (),
                config: Path = CONFIG) -> dict:
    """Train the PPO student of ``config`` under ``teacher`` (with config ``overrides``); return its test-set mastery."""
    from lifelong.config import load_config
    from lifelong.run import train

    cfg = load_config(config, [
        f"curriculum.teacher.name={teacher}", f"run.seed={seed}", f"run.total_steps={steps}",
        f"run.eval_every={max(1, steps // evals)}", "run.checkpoint_every=0", "run.progress=false",
        "run.torch_threads=1", "curriculum.density_every=0", *overrides,
    ])
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, f"{tmp}/run")
    tests = results["curriculum_tests"]
    if not tests:
        raise RuntimeError(f"{teacher} seed {seed}: results.json has no curriculum_tests")
    return {
        "mastered": [100.0 * t["mastered"] for t in tests],
        "steps": [t["step"] for t in tests],
        "train_seconds": results["wall_time_s"] - results["eval_time_s"] - results["setup_time_s"],
    }


def _spread(values: list[float]) -> str:
    """``mean (min..max)`` of a list of percentages."""
    return f"{statistics.mean(values):5.1f} ({min(values):.0f}..{max(values):.0f})"


def main() -> None:
    """Run every teacher for every seed and print the table and ratios against random."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per teacher")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per run")
    parser.add_argument("--evals", type=int, default=5, help="test-set evaluations per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="comma-separated; random is the peer")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the student's preset; only the teacher changes")
    parser.add_argument("--worker", choices=TEACHERS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    extra = ("--steps", str(args.steps), "--evals", str(args.evals), "--config", str(args.config),
             *(f"--set={o}" for o in args.set))
    if args.worker:
        print(json.dumps(run_teacher(args.worker, args.seed, args.steps, args.evals, args.set, args.config)))
        return

    teachers = [t for t in args.teachers.split(",") if t]
    unknown = sorted(set(teachers) - set(TEACHERS))
    if unknown:
        parser.error(f"--teachers: {unknown} not allowed (allowed: {', '.join(TEACHERS)})")
    rows: dict[str, list[dict]] = {name: [] for name in teachers}
    print(f"{'teacher':<10} {'seed':>4} {'mastered % at each evaluation':<32} {'train s':>8}", flush=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for name, seed, row in spawn_rotated(__file__, teachers, seeds, args.jobs, *extra):
        rows[name].append(row)
        trace = " ".join(f"{m:.0f}" for m in row["mastered"])
        print(f"{name:<10} {seed:>4} {trace:<32} {row['train_seconds']:>8.1f}", flush=True)

    print()
    print(f"{args.steps:,} env steps per run, {args.seeds} seeds; mean (min..max) over seeds; "
          "ratio = mean final mastered / random's")
    print(f"{'teacher':<10} {'final mastered %':>18} {'best mastered %':>18} {'vs random':>10} {'train s':>8} "
          f"{'vs random':>10} {'U vs random':>12} {'p':>7}")
    peer_final = statistics.mean(r["mastered"][-1] for r in rows["random"]) if "random" in rows else None
    peer_time = statistics.mean(r["train_seconds"] for r in rows["random"]) if "random" in rows else None
    for name in teachers:
        final = [r["mastered"][-1] for r in rows[name]]
        best = [max(r["mastered"]) for r in rows[name]]
        seconds = statistics.mean(r["train_seconds"] for r in rows[name])
        ratio = f"{statistics.mean(final) / peer_final:.2f}x" if peer_final else "-"
        overhead = f"{seconds / peer_time:.2f}x" if peer_time else "-"
        test = "-", "-"
        if "random" in rows and name != "random":
            u, p = rank_test(final, [r["mastered"][-1] for r in rows["random"]])
            test = f"{u:g}/{len(final) * len(rows['random'])}", f"{p:.4f}"
        print(f"{name:<10} {_spread(final):>18} {_spread(best):>18} {ratio:>10} {seconds:>8.1f} {overhead:>10} "
              f"{test[0]:>12} {test[1]:>7}")


if __name__ == "__main__":
    main()
