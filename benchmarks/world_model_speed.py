"""World-model training and imagination throughput of every memory backbone against the GRU RSSM.

Training: one forward+backward of ``LatentWorldModel.compute_loss`` on ``B=16`` random
sequences of length ``T`` (vector observations of 8, one-hot actions of 4, ``is_first``
only at t=0, so no terminal lanes), reported as sequence steps per second (``B*T / time``).
Imagination: ``imagine`` with a small MLP policy (straight-through one-hot actions) for
``H=15`` steps from ``N=1024`` start states, reported as imagined steps per second
(``N*H / time``), under ``torch.no_grad`` as in the discrete Dreamer update.

Every model uses the same ``size`` preset (MLP widths), ``stoch x classes`` latents and
backbone width 128; the posterior is each backbone's default (``auto``: recurrent for
gru/lstm, so ``observe`` walks the sequence step by step; nonrecurrent for s5, ffm,
transformer and hcam, so the backbone runs once over the sequence, a parallel scan for s5
and ffm). ``gru-nr`` is the GRU with a nonrecurrent posterior (one fused GRU call per
sequence), for reference. Ratios are against ``gru`` measured in the same process; figures
are medians of ``--reps`` repetitions after a warm-up, one torch thread.

    python benchmarks/world_model_speed.py [--reps 3] [--steps 64 256 1024] [--size tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lifelong.allocator import keep_freed_memory  # noqa: E402
from lifelong.config import build  # noqa: E402
from lifelong.world_models import LatentWorldModel, LatentWorldModelConfig  # noqa: E402
from lifelong.world_models.distributions import straight_through_sample  # noqa: E402

OBS_DIM, ACT_DIM, BATCH, HORIZON, STARTS = 8, 4, 16, 15, 1024
PEER = "gru"


def backbones(width: int) -> dict[str, dict]:
    """Backbone settings of every contender at ``width`` (and the posterior it uses)."""
    return {
        "gru": {"backbone": {"name": "gru", "hidden": width}},
        "gru-nr": {"backbone": {"name": "gru", "hidden": width}, "posterior": "nonrecurrent"},
        "lstm": {"backbone": {"name": "lstm", "hidden": width}},
        "s5": {"backbone": {"name": "s5", "d_model": width, "state_size": width // 2, "layers": 2}},
        "ffm": {"backbone": {"name": "ffm", "hidden": width}},
        "transformer": {"backbone": {"name": "transformer", "d_model": width, "heads": 4, "layers": 2,
                                     "window": 64}},
        "hcam": {"backbone": {"name": "hcam", "d_model": width, "chunk_size": 16, "top_k": 2, "capacity": 16}},
    }


def make_model(name: str, size: str, width: int, stoch: int) -> LatentWorldModel:
    """The world model of contender ``name``."""
    torch.manual_seed(0)
    raw = {"size": size, "stoch": stoch, "classes": stoch, **backbones(width)[name]}
    return LatentWorldModel((OBS_DIM,), ACT_DIM, build(LatentWorldModelConfig, raw))


def random_batch(steps: int) -> dict[str, torch.Tensor]:
    """Replay rows ``[T, B]`` of random observations and one-hot actions, one episode per row of envs."""
    gen = torch.Generator().manual_seed(1)
    action = torch.nn.functional.one_hot(torch.randint(ACT_DIM, (steps, BATCH), generator=gen), ACT_DIM).float()
    is_first = torch.zeros(steps, BATCH, dtype=torch.bool)
    is_first[0] = True
    return {"obs": torch.randn(steps, BATCH, OBS_DIM, generator=gen), "action": action,
            "reward": torch.randn(steps, BATCH, generator=gen), "terminated": torch.zeros(steps, BATCH, dtype=torch.bool),
            "is_first": is_first}


def median_seconds(fn, reps: int) -> float:
    """Median wall time of ``fn`` over ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_rate(model: LatentWorldModel, steps: int, reps: int) -> float:
    """Sequence steps per second of compute_loss forward+backward."""
    batch = random_batch(steps)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.compute_loss(batch).loss.backward()

    return BATCH * steps / median_seconds(step, reps)


def imagine_rate(model: LatentWorldModel, reps: int) -> float:
    """Imagined steps per second from STARTS posterior states with an MLP policy."""
    steps = STARTS // BATCH
    batch = random_batch(steps)
    policy_net = nn.Sequential(nn.Linear(model.feat_dim, 64), nn.SiLU(), nn.Linear(64, ACT_DIM))

    def policy(feat: torch.Tensor) -> torch.Tensor:
        return straight_through_sample(torch.log_softmax(policy_net(feat), -1))

    with torch.no_grad():
        out = model.compute_loss(batch)
        start = model.start_states(out.posterior, out.initial_state)

        def run() -> None:
            model.imagine(policy, start, HORIZON)

        return STARTS * HORIZON / median_seconds(run, reps)


def main() -> None:
    """Measure every contender, print tables with ratios against the GRU, and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "medium"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--stoch", type=int, default=16, help="latents and classes per latent")
    parser.add_argument("--only", nargs="*", default=None, help="contenders (default: all)")
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="measure without run.keep_freed_memory's allocator tuning")
    args = parser.parse_args()
    if not args.glibc_malloc_defaults:
        keep_freed_memory()  # as lifelong train does (run.keep_freed_memory)
    torch.set_num_threads(1)
    names = args.only or list(backbones(args.width))
    if PEER not in names:
        names.insert(0, PEER)
    started = time.perf_counter()
    train: dict[str, dict[int, float]] = {}
    imagine: dict[str, float] = {}
    for name in names:
        model = make_model(name, args.size, args.width, args.stoch)
        train[name] = {t: train_rate(model, t, args.reps) for t in args.steps}
        imagine[name] = imagine_rate(model, args.reps)
        print(f"{name}: " + ", ".join(f"T={t} {r:,.0f} steps/s" for t, r in train[name].items())
              + f"; imagine {imagine[name]:,.0f} steps/s", file=sys.stderr, flush=True)

    print(f"\nWorld-model training (compute_loss forward+backward, B={BATCH}, size {args.size}, width "
          f"{args.width}, {args.stoch}x{args.stoch} latents, 1 thread): sequence steps/s and ratio vs {PEER}")
    head = "| backbone | posterior | " + " | ".join(f"T={t}" for t in args.steps) + f" | imagine (N={STARTS}, H={HORIZON}) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in names:
        model_posterior = "recurrent" if name in ("gru", "lstm") else "nonrecurrent"
        cells = [f"{train[name][t]:,.0f} ({train[name][t] / train[PEER][t]:.2f}x)" for t in args.steps]
        cells.append(f"{imagine[name]:,.0f} ({imagine[name] / imagine[PEER]:.2f}x)")
        print(f"| {name} | {model_posterior} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    print(json.dumps({"train_steps_per_s": train, "imagine_steps_per_s": imagine}))


if __name__ == "__main__":
    main()
