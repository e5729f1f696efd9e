"""Forward+backward speed of the memory modules against torch's ``nn.GRU`` of the same width.

Every module consumes ``x [T, B=16, 256]`` (requires grad, as if from an encoder) with
``is_first`` set only at t=0, and is differentiated through a fixed random projection
of its output. Modules: ``gru``/``lstm`` (hidden 256), ``s5`` (d_model 256, state 256,
its default 2 layers), ``ffm`` (hidden 256, m=32, c=4). The peer, a bare
``nn.GRU(256, 256)``, runs in the same process with the repetitions interleaved
(contender order rotates each round); figures are medians. The ratio is
``nn.GRU time / module time`` (above 1: faster than the GRU). A second table repeats
T=1024 with episode ends inside the sequence (each env resets with probability 1/200
per step), where ``gru``/``lstm`` split their fused kernel at every reset.
Runs with 1 thread, then with torch's default thread count.

    python benchmarks/memory_speed.py [--reps 5] [--steps 128 1024] [--batch 16] [--width 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lifelong.allocator import keep_freed_memory  # noqa: E402
from lifelong.config import build  # noqa: E402
from lifelong.registry import MEMORY  # noqa: E402

PEER = "nn.GRU"


def module_configs(width: int) -> dict[str, dict]:
    """The benchmarked modules and their settings at ``width``."""
    return {
        "gru": {"name": "gru", "hidden": width},
        "lstm": {"name": "lstm", "hidden": width},
        "s5": {"name": "s5", "d_model": width, "state_size": width},
        "ffm": {"name": "ffm", "hidden": width},
    }


def make_step(name: str, raw: dict | None, width: int, steps: int, batch: int,
              reset_prob: float) -> Callable[[], None]:
    """A closure running one forward+backward pass of contender ``name``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, width, generator=gen, requires_grad=True)
    is_first = torch.rand(steps, batch, generator=gen) < reset_prob
    is_first[0] = True
    if raw is None:
        core: nn.Module = nn.GRU(width, width)
        h0 = torch.zeros(1, batch, width)

        def forward() -> torch.Tensor:
            return core(x, h0)[0]
    else:
        entry = MEMORY.get(raw["name"])
        core = entry.factory(width, build(entry.config, raw))
        state = core.initial_state(batch, "cpu")

        def forward() -> torch.Tensor:
            return core(x, state, is_first)[0]
    probe = torch.randn(steps, batch, width, generator=gen)

    def step() -> None:
        x.grad = None
        core.zero_grad(set_to_none=True)
        (forward() * probe).sum().backward()

    return step


def measure(contenders: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median milliseconds per contender, repetitions interleaved with a rotating order."""
    names = list(contenders)
    for name in names:  # warm-up: allocator, thread pools, lazy init
        contenders[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {n: statistics.median(t) for n, t in times.items()}


def table(title: str, results: dict[int, dict[str, float]]) -> None:
    """Print ms and the speed ratio against the peer for every module and T."""
    print(f"\n{title}")
    print(f"{'module':<8} {'T':>5} {'ms':>9} {'x nn.GRU':>9}")
    for steps, row in results.items():
        for name, ms in row.items():
            ratio = row[PEER] / ms
            print(f"{name:<8} {steps:>5} {ms:>9.1f} {ratio:>9.2f}")


def main() -> None:
    """Run the benchmark at 1 thread and at the default thread count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--modules", nargs="+", default=list(module_configs(256)))
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="measure without run.keep_freed_memory's allocator tuning")
    args = parser.parse_args()
    if not args.glibc_malloc_defaults:
        keep_freed_memory()  # as lifelong train does (run.keep_freed_memory)
    default_threads = torch.get_num_threads()
    configs = {n: c for n, c in module_configs(args.width).items() if n in args.modules}
    for threads in dict.fromkeys([1, default_threads]):
        torch.set_num_threads(threads)
        results: dict[int, dict[str, float]] = {}
        for steps in args.steps:
            contenders = {PEER: make_step(PEER, None, args.width, steps, args.batch, 0.0)}
            for name, raw in configs.items():
                contenders[name] = make_step(name, raw, args.width, steps, args.batch, 0.0)
            results[steps] = measure(contenders, args.reps)
        table(f"forward+backward, B={args.batch}, width {args.width}, {threads} thread(s), "
              f"no resets after t=0 (median of {args.reps})", results)
        steps = max(args.steps)
        contenders = {PEER: make_step(PEER, None, args.width, steps, args.batch, 0.0)}
        for name, raw in configs.items():
            contenders[name] = make_step(name, raw, args.width, steps, args.batch, 1 / 200)
        table(f"same, T={steps} with resets (p=1/200 per env step; the nn.GRU peer ignores them), "
              f"{threads} thread(s)", {steps: measure(contenders, args.reps)})


if __name__ == "__main__":
    main()
