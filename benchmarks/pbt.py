"""Population Based Training against a fixed-hyperparameter population with the same compute.

    python benchmarks/pbt.py quadratic [--seeds 20]
        10-D noisy quadratic, 8 members, learning rate log-uniform in [1e-3, 1]: the best
        final loss of PBT against the best of the same 8 members trained without
        exploit/explore (same controller seed, so the same initial learning rates), per seed.

    python benchmarks/pbt.py cartpole [--backend local|ray] [--seeds 1]
        PPO on CartPole-v1, population 4 (2 workers): wall-clock from population start until
        the best member's evaluation first reaches 475, against the median over members of
        the same population without exploit (each member's own first 475); and the
        controller's own time per decision round.

    python benchmarks/pbt.py ray-vs-local
        The PBT CartPole population on the local backend and on a local Ray instance
        (2 CPUs), one after the other: wall-clock ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lifelong.config import Config, PBTConfig, RunConfig, load_config
from lifelong.population import Population
from lifelong.population.backends import InlineBackend
from lifelong.population.toys import NoisyQuadraticTask

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 475.0


def quadratic(seeds: int) -> None:
    """PBT vs fixed population on the noisy quadratic, per seed."""
    wins = 0
    print(f"{'seed':>4} {'PBT best loss':>14} {'fixed best loss':>16}  winner")
    ratios = []
    for seed in range(seeds):
        out = {}
        for name, exploit in (("pbt", True), ("fixed", False)):
            pbt = PBTConfig(population=8, ready_steps=50, quantile=0.25, seed=seed,
                            min_score_gap=0.0 if exploit else 1e30,
                            hyperparams={"lr": {"low": 1e-3, "high": 1.0, "scale": "log"}})
            cfg = Config(run=RunConfig(total_steps=1000), pbt=pbt)
            with tempfile.TemporaryDirectory() as tmp:
                results = Population.create(cfg, tmp, NoisyQuadraticTask(seed=seed), backend=InlineBackend(),
                                            log=False).run()
            out[name] = -results["best_score"]
        wins += out["pbt"] < out["fixed"]
        ratios.append(out["fixed"] / out["pbt"])
        print(f"{seed:>4} {out['pbt']:>14.4f} {out['fixed']:>16.4f}  {'PBT' if out['pbt'] < out['fixed'] else 'fixed'}")
    print(f"\nPBT better in {wins}/{seeds} seeds; median fixed/PBT loss ratio {statistics.median(ratios):.2f}x")


def first_reach(events: list[dict], member: int | None = None) -> float | None:
    """Wall time of the first segment evaluation >= 475 (of ``member``, or of any member)."""
    for e in events:
        if e["kind"] == "segment" and e["score"] >= THRESHOLD and (member is None or e["member"] == member):
            return e["wall_time_s"]
    return None


def cartpole_population(backend: str, exploit: bool, seed: int, tmp: str) -> dict:
    """Run the preset population (optionally without exploit) and return its results."""
    overrides = [f"pbt.backend={backend}", f"pbt.seed={seed}", "run.progress=false"]
    if not exploit:
        overrides.append("pbt.min_score_gap=1e9")  # never exploit
    cfg = load_config(ROOT / "configs/pbt_ppo_cartpole.yaml", overrides)
    started = time.perf_counter()
    results = Population.create(cfg, Path(tmp) / ("pbt" if exploit else "fixed"), log=False).run()
    results["total_s"] = time.perf_counter() - started
    return results


def cartpole(backend: str, seeds: int) -> None:
    """Time for the best PBT member to reach 475 against the median fixed member."""
    print(f"{'seed':>4} {'PBT best to 475 (s)':>20} {'fixed median to 475 (s)':>24} {'controller ms/round':>20}")
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            pbt = cartpole_population(backend, True, seed, tmp)
            fixed = cartpole_population(backend, False, seed, tmp)
        t_pbt = first_reach(pbt["events"])
        per_member = [first_reach(fixed["events"], m["id"]) for m in fixed["members"]]
        reached = sorted(t if t is not None else float("inf") for t in per_member)
        median = statistics.median(reached)
        overhead = 1000 * pbt["controller_seconds"] / max(pbt["rounds"], 1)
        print(f"{seed:>4} {t_pbt if t_pbt is not None else float('inf'):>20.1f} {median:>24.1f} {overhead:>20.1f}")
        print(f"      fixed members' times to 475: {[round(t, 1) for t in reached]}; "
              f"PBT exploits: {sum(e['kind'] == 'exploit' for e in pbt['events'])}")


def ray_vs_local() -> None:
    """The same population on both backends, wall-clock ratio."""
    times = {}
    for backend in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            times[backend] = cartpole_population(backend, True, 0, tmp)["total_s"]
        print(f"{backend:<6} {times[backend]:.1f} s", flush=True)
    print(f"ray / local wall-clock: {times['ray'] / times['local']:.2f}x")


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["quadratic", "cartpole", "ray-vs-local"])
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    args = parser.parse_args()
    if args.which == "quadratic":
        quadratic(args.seeds or 20)
    elif args.which == "cartpole":
        cartpole(args.backend, args.seeds or 1)
    else:
        ray_vs_local()


if __name__ == "__main__":
    sys.exit(main())
