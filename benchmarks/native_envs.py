"""Steps per second of the native torch-batched envs against POPGym's own envs stepped in a Python loop.

Native envs: ``RepeatPreviousEasy`` and ``PositionOnlyCartPoleEasy`` from
``lifelong.envs.native``, random actions generated on the env's device, stepped in a
loop (same-step autoreset included). Peers, measured in the same process run:

* ``popgym``: the ``popgym`` package's env of the same id, one env at a time in a Python
  loop (``reset`` when an episode ends), random actions from a numpy generator; when
  ``popgym`` is not installed, a per-env Python reference instead (a minimal
  RepeatPrevious, Gymnasium's CartPoleEnv);
* ``gymnasium-vector``: Gymnasium's numpy-vectorised ``CartPoleVectorEnv`` (CartPole only).

Printed: env steps per second (median of ``--repeats`` timings) at 4096 envs with the
ratio native / peer, and native SPS from 256 to 65,536 envs. Absolute numbers depend
on the machine and its load; the ratios are the point.

    python benchmarks/native_envs.py [--threads 1] [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch

TASKS = ("RepeatPreviousEasy", "PositionOnlyCartPoleEasy")
SIZES = (256, 1024, 4096, 16384, 65536)


def sync(device: torch.device) -> None:
    """Wait for queued device work (timings on accelerators)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(run: Callable[[], int]) -> float:
    """(steps done by ``run()``) / (its seconds)."""
    start = time.perf_counter()
    steps = run()
    return steps / (time.perf_counter() - start)


def native_runner(task_id: str, num_envs: int, device: torch.device, seconds: float = 0.5) -> Callable[[], int]:
    """A function stepping the native task at ``num_envs`` envs for about ``seconds``; returns env steps done."""
    from lifelong.envs.native import make_task

    env = make_task(task_id, num_envs, seed=0, device=device)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    n = int(env.action_space.n)

    def block(count: int) -> None:
        for _ in range(count):
            env.step(torch.randint(0, n, (num_envs,), generator=gen, device=device))

    block(20)  # warm-up
    sync(device)
    start = time.perf_counter()
    block(20)
    sync(device)
    per_step = (time.perf_counter() - start) / 20
    loops = max(20, int(seconds / max(per_step, 1e-7)))

    def run() -> int:
        block(loops)
        sync(device)
        return loops * num_envs

    return run


class PythonRepeatPrevious:
    """A per-env Python RepeatPrevious (POPGym's rules), the peer when ``popgym`` is not installed."""

    def __init__(self, k: int = 4) -> None:
        self.k, self.rng = k, np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> tuple[int, dict]:
        self.cards = list(self.rng.permutation(52) % 4)
        self.seen = [self.cards.pop()]
        return self.seen[-1], {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        scale = 1 / (52 - self.k)
        reward = 0.0
        if len(self.seen) >= self.k:
            reward = scale if action == self.seen[-self.k] else -scale
        terminated = len(self.cards) == 1
        self.seen.append(self.cards.pop())
        return self.seen[-1], reward, terminated, False, {}


def python_env(task_id: str) -> tuple[Callable[[], object], str]:
    """A constructor of one per-env Python env for ``task_id`` and the peer's name."""
    try:
        import popgym.envs as envs

        return getattr(envs, task_id), "popgym"
    except ImportError:
        if task_id.startswith("RepeatPrevious"):
            return PythonRepeatPrevious, "python reference"
        from gymnasium.envs.classic_control import CartPoleEnv

        return CartPoleEnv, "python reference (gymnasium CartPoleEnv)"


def python_loop_runner(task_id: str, num_envs: int = 16, steps: int = 1000) -> tuple[Callable[[], int], str]:
    """A function stepping ``num_envs`` per-env Python envs one after another in a loop, and the peer's name."""
    make, name = python_env(task_id)
    envs = [make() for _ in range(num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    rng = np.random.default_rng(0)
    n = 4 if task_id.startswith("RepeatPrevious") else 2

    def run() -> int:
        actions = rng.integers(0, n, size=(steps, num_envs))
        for t in range(steps):
            for i, env in enumerate(envs):
                _, _, terminated, truncated, _ = env.step(int(actions[t, i]))
                if terminated or truncated:
                    env.reset()
        return steps * num_envs

    return run, f"{name} (Python loop)"


def gymnasium_vector_runner(num_envs: int, steps: int = 300) -> Callable[[], int]:
    """A function stepping Gymnasium's numpy-vectorised CartPole-v1 at ``num_envs`` envs."""
    import gymnasium as gym

    env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def run() -> int:
        for _ in range(steps):
            env.step(rng.integers(0, 2, size=num_envs))
        return steps * num_envs

    return run


def paired(native: Callable[[], int], peer: Callable[[], int], repeats: int) -> tuple[float, float, float]:
    """Medians of native SPS, peer SPS and of their per-repeat ratio, timing the two alternately.

    Alternating puts both under the same machine load, so the ratio is steadier than
    the absolute numbers on a shared machine.
    """
    pairs = [(rate(native), rate(peer)) for _ in range(repeats)]
    return (
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(a / b for a, b in pairs),
    )


def main() -> None:
    """Command-line entry: print the comparison at 4096 envs and the scaling table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the presets use 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}; median of {args.repeats} timings")

    print("\nAt 4096 envs (env steps per second)")
    print(f"{'task':<26} {'native':>12} {'peer':>40} {'peer SPS':>12} {'native/peer':>12}")
    for task_id in TASKS:
        native = native_runner(task_id, 4096, device)
        peers = [python_loop_runner(task_id)]
        if "CartPole" in task_id:
            peers.append((gymnasium_vector_runner(4096), "gymnasium CartPoleVectorEnv (numpy)"))
        for i, (peer, name) in enumerate(peers):
            a, b, ratio = paired(native, peer, args.repeats)
            label = task_id if i == 0 else ""
            print(f"{label:<26} {a:>12,.0f} {name:>40} {b:>12,.0f} {ratio:>11,.1f}x", flush=True)

    print("\nScaling of the native envs (env steps per second)")
    print(f"{'num_envs':>9} " + " ".join(f"{t:>26}" for t in TASKS))
    for size in SIZES:
        runners = [native_runner(t, size, device) for t in TASKS]
        row = [statistics.median(rate(run) for _ in range(args.repeats)) for run in runners]
        print(f"{size:>9,} " + " ".join(f"{v:>26,.0f}" for v in row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
