"""One SAC or TD3 update on HalfCheetah: lifelong's and SB3's against the float32 matrix-product floor.

The floor: every matrix product one update does (the forward passes, and the products
autograd needs backward: weight gradients of the trained networks, input gradients down
to where a gradient is still needed), each timed on its own shape, summed. With these
networks, batch and update schedule in float32 on one core, no implementation's update
is faster than that sum, whatever it does about everything else (activations, losses,
Adam, Polyak averaging, replay sampling).

Then the full update of each side, one torch thread, interleaved in rounds within this
process: lifelong's preset (``configs/sac_halfcheetah.yaml``, ``configs/td3_halfcheetah.yaml``)
with its replay filled by random transitions, and SB3 with RL-Zoo's MuJoCo settings (as in
``benchmarks/offpolicy.py``) with its buffer filled by 2,000 random steps of HalfCheetah-v4;
and SB3's whole training step (collecting one env step, then one update), the quantity an
end-to-end speed ratio divides.

    python benchmarks/offpolicy_update_floor.py [--algo sac|td3] [--rounds 3] [--updates 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offpolicy import sb3_halfcheetah_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, OBS, ACT = 256, 17, 6
Shape = tuple[int, int, int]  # (m, k, n): an [m, k] @ [k, n] product


def forward(layers: list[tuple[int, int]]) -> list[Shape]:
    """Products of a forward pass through linear layers ``(in, out)`` on a batch."""
    return [(BATCH, i, o) for i, o in layers]


def backward(layers: list[tuple[int, int]], weights: bool, input_grad: bool) -> list[Shape]:
    """Backward products: weight gradients ``x^T dy`` if ``weights``; input gradients ``dy W^T`` of every
    layer but the first, and of the first too if ``input_grad`` (a gradient wanted at the input)."""
    out = [(i, BATCH, o) for i, o in layers] if weights else []
    return out + [(BATCH, o, i) for i, o in (layers if input_grad else layers[1:])]


def update_products(algo: str) -> list[tuple[Shape, float]]:
    """``(shape, count per update)`` of every matrix product in one update of the HalfCheetah preset."""
    if algo == "sac":
        h1, h2 = 256, 256
        actor = [(OBS, h1), (h1, h2), (h2, ACT), (h2, ACT)]  # trunk, mean and log-std heads
        actor_trunk_grads = [(BATCH, ACT, h2)] * 2 + [(BATCH, h2, h1)]  # heads' and layer 2's input gradients
        actor_every = 1.0
    else:
        h1, h2 = 400, 300
        actor = [(OBS, h1), (h1, h2), (h2, ACT)]
        actor_trunk_grads = backward(actor, weights=False, input_grad=False)
        actor_every = 0.5  # policy_delay 2
    critic = [(OBS + ACT, h1), (h1, h2), (h2, 1)]
    critics_in_actor_loss = 2 if algo == "sac" else 1  # SAC: min of both; TD3: Q1 only
    products: list[tuple[Shape, float]] = []
    # Targets: the (target) actor at s', both target critics at (s', a').
    products += [(s, 1.0) for s in forward(actor)] + [(s, 2.0) for s in forward(critic)]
    # Critic loss: both critics forward, weight gradients, input gradients above the first layer.
    products += [(s, 2.0) for s in forward(critic) + backward(critic, weights=True, input_grad=False)]
    # Actor loss: actor forward, critics forward and input gradients down to the action, actor gradients.
    products += [(s, actor_every) for s in forward(actor) + backward(actor, weights=True, input_grad=False)[:len(actor)]]
    products += [(s, actor_every) for s in actor_trunk_grads]
    products += [(s, actor_every * critics_in_actor_loss)
                 for s in forward(critic) + backward(critic, weights=False, input_grad=True)]
    return products


def time_product(shape: Shape, reps: int = 300) -> float:
    """Seconds per ``[m, k] @ [k, n]`` product."""
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(20):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return (time.perf_counter() - start) / reps


def lifelong_updater(algo: str) -> Callable[[int], float]:
    """Seconds per update of lifelong's HalfCheetah preset (replay: 20,000 random transitions), over n updates."""
    from lifelong.allocator import keep_freed_memory
    from lifelong.config import load_config
    from lifelong.run import Run, make_trainer

    keep_freed_memory()  # what `lifelong train` does (run.keep_freed_memory)
    cfg = load_config(ROOT / f"configs/{algo}_halfcheetah.yaml", ["run.progress=false", "agent.buffer_size=20000"])
    run = Run.create(cfg, tempfile.mkdtemp() + "/run", logger=False)
    trainer = make_trainer(cfg, run)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20_000):
        trainer.replay.add(torch.randn(1, OBS, generator=gen), torch.rand(1, ACT, generator=gen) * 2 - 1,
                           torch.randn(1, generator=gen), torch.zeros(1, dtype=torch.bool),
                           torch.zeros(1, dtype=torch.bool), torch.randn(1, OBS, generator=gen))

    def timed(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            trainer.update()
        return (time.perf_counter() - start) / n

    return timed


def sb3_timers(algo: str) -> tuple[Callable[[int], float], Callable[[int], float]]:
    """Seconds per gradient step, and per training step (one env step, then one update), of SB3's SAC or
    TD3 (RL-Zoo MuJoCo settings) after 2,000 random env steps."""
    import gymnasium as gym

    model = sb3_halfcheetah_model(algo, gym.make("HalfCheetah-v4"), seed=0)
    model.learn(2_000)  # below learning_starts: random actions into the buffer, no updates
    model.learning_starts = 0  # from here every env step is followed by one update (train_freq 1)

    def update(n: int) -> float:
        start = time.perf_counter()
        model.train(gradient_steps=n, batch_size=256)
        return (time.perf_counter() - start) / n

    def step(n: int) -> float:
        start = time.perf_counter()
        model.learn(n, reset_num_timesteps=False)
        return (time.perf_counter() - start) / n

    return update, step


def main() -> None:
    """Print the floor, both updates (median over rounds) and what 2x SB3's speed would need."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("sac", "td3"), default="sac")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=300, help="updates timed per side per round")
    args = parser.parse_args()
    torch.set_num_threads(1)

    products = update_products(args.algo)
    floor = sum(count * time_product(shape) for shape, count in products)
    flops = sum(count * 2 * m * k * n for (m, k, n), count in products)
    sb3_update, sb3_step = sb3_timers(args.algo)
    sides = {"lifelong": lifelong_updater(args.algo), "sb3": sb3_update, "sb3_step": sb3_step}
    for timed in sides.values():  # warm-up (first calls allocate, TD3's delay cycles once)
        timed(20)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
            times[name].append(sides[name](args.updates))
    ours, peer, step = (statistics.median(times[name]) for name in ("lifelong", "sb3", "sb3_step"))
    print(f"{args.algo}: {sum(c for _, c in products):g} matrix products per update, {flops / 1e9:.3f} GFLOP")
    print(f"floor (matrix products alone)  {floor * 1e3:6.2f} ms  ({flops / floor / 1e9:.0f} GFLOPS)")
    print(f"lifelong update                {ours * 1e3:6.2f} ms  (floor is {floor / ours:.0%} of it)")
    print(f"SB3 update                     {peer * 1e3:6.2f} ms  (floor is {floor / peer:.0%} of it)")
    print(f"SB3 / lifelong                 {peer / ours:.2f}x")
    print(f"SB3 step (env step + update)   {step * 1e3:6.2f} ms")
    print(f"2x SB3's step needs a step of  {step / 2 * 1e3:6.2f} ms: {step / 2 / floor:.2f}x the floor, leaving "
          f"{(step / 2 - floor) * 1e3:.2f} ms for the env step and everything in the update but the matrix "
          f"products (lifelong's update alone spends {(ours - floor) * 1e3:.2f} ms there now)")


if __name__ == "__main__":
    main()
