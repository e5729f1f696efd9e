"""Cue recall in imagination: does the world model carry a cue across a gap of G steps with the prior alone?

Data: native ``CueRecall`` (K symbols, 4 by default, gap G; an episode is the cue observation, G blank
steps, the query step, and the answer, which rewards 1 iff it names the cue and ends the
episode; the final observation shows the cue again as feedback) with uniformly random
actions. All envs reset together and episodes have the fixed length G+2, so every
training batch is B=16 freshly generated whole episodes (``[G+2, B]`` rows starting at
``is_first``; the answer's reward, termination and feedback observation are trained on the
terminal step from ``final_obs``). No replay reuse: every update sees new episodes.

Training: ``LatentWorldModel.compute_loss`` with Adam for ``--updates`` updates, one world
model per backbone (gru, lstm: recurrent posterior; s5, transformer, ffm and gru-nr, the GRU
with the posterior of R2I/S4WM: nonrecurrent), all with
the same tiny MLPs, 16x16 latents and backbone width 128. ``transformer`` starts its gates at
``gate_bias: 0``, ``transformer-b2`` at GTrXL's 2, and ``transformer-pos`` adds the episode-step
embedding (``episode_position``) to ``transformer``.

Test (``lifelong.world_models.cue_probe``, on ``--episodes`` fresh episodes at every tenth
of the run): observe only the cue step, roll the *prior* open-loop through the gap, the
query and each of the K answers, and score ``recall`` (the cue decoded from the imagined
feedback observation) and ``answer`` (the true cue's answer has the highest predicted
reward). Chance is 1/K. The model never sees an observation after the cue, so either can
only come from what the backbone carried. ``query_recall`` and ``query_answer`` are the
same scores when the model also observes the query step after the imagined gap
(``observe_query``): they need the cue carried through the imagined gap but not the
query's time predicted, so the two pairs tell a memory failure from a miscounted gap.

    python benchmarks/world_model_memory.py [--gaps 32 128 512] [--backbones gru s5 transformer]
        [--updates 300] [--episodes 128] [--symbols 4] [--free-nats 1.0] [--rep-scale 0.1] [--seed 0]
        [--window 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lifelong.allocator import keep_freed_memory  # noqa: E402
from lifelong.config import build  # noqa: E402
from lifelong.optim import FlatAdam  # noqa: E402
from lifelong.world_models import LatentWorldModel, LatentWorldModelConfig  # noqa: E402
from lifelong.world_models.cue_probe import CueEpisodes, cue_recall_scores  # noqa: E402

SYMBOLS, BATCH, WIDTH = 4, 16, 128  # SYMBOLS: the default K
BACKBONES = {
    "gru": {"name": "gru", "hidden": WIDTH},
    "gru-nr": {"name": "gru", "hidden": WIDTH},  # with the nonrecurrent posterior (POSTERIOR)
    "s5": {"name": "s5", "d_model": WIDTH, "state_size": WIDTH // 2, "layers": 2},
    # gate_bias 0: with GTrXL's 2 the attention path starts too weak to learn the lookup (transformer-b2)
    "transformer": {"name": "transformer", "d_model": WIDTH, "heads": 4, "layers": 2, "window": 64, "gate_bias": 0.0},
    "transformer-b2": {"name": "transformer", "d_model": WIDTH, "heads": 4, "layers": 2, "window": 64},
    # and with a learned embedding of the episode step: absolute time, to predict when the query comes
    "transformer-pos": {"name": "transformer", "d_model": WIDTH, "heads": 4, "layers": 2, "window": 64,
                        "gate_bias": 0.0, "episode_position": True},
    "lstm": {"name": "lstm", "hidden": WIDTH},
    "ffm": {"name": "ffm", "hidden": WIDTH},
}

SCORES = ("recall", "answer", "query_recall", "query_answer")
POSTERIOR = {"gru-nr": "nonrecurrent"}  # every other entry uses its backbone's default ("auto")


def make_model(backbone: str, seed: int, reward_scale: float = 1.0, symbols: int = SYMBOLS,
               free_nats: float = 1.0, rep_scale: float = 0.1, window: int | None = None) -> LatentWorldModel:
    """A tiny world model on ``backbone`` (``window`` overrides a transformer's steps per layer)."""
    torch.manual_seed(seed)
    spec = dict(BACKBONES[backbone])
    if window is not None and spec["name"] == "transformer":
        spec["window"] = window
    raw = {"size": "tiny", "stoch": 16, "classes": 16, "backbone": spec, "reward_scale": reward_scale,
           "free_nats": free_nats, "rep_scale": rep_scale, "posterior": POSTERIOR.get(backbone, "auto")}
    return LatentWorldModel((symbols + 1,), symbols, build(LatentWorldModelConfig, raw))


def train(model: LatentWorldModel, data: CueEpisodes, updates: int, lr: float,
          test: CueEpisodes | None = None) -> list[dict]:
    """``updates`` Adam steps on fresh episodes; at every tenth of the run the reward loss (and scores on ``test``)."""
    opt = FlatAdam(model.parameters(), lr=lr, max_grad_norm=1000.0)
    curve = []
    for i in range(updates):
        out = model.compute_loss(data.sample())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if (i + 1) % max(1, updates // 10) == 0 or i == updates - 1:
            point = {"update": i + 1, "reward_loss": round(float(out.metrics["wm_reward"]), 4)}
            if test is not None:
                point["recall"], point["answer"] = cue_recall_scores(model, test)
                point["query_recall"], point["query_answer"] = cue_recall_scores(model, test, observe_query=True)
            curve.append(point)
            print(f"  {point}", file=sys.stderr, flush=True)  # a long run shows its curve as it goes
    return curve


def main() -> None:
    """Train and test every (backbone, gap); print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaps", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--backbones", nargs="+", default=["gru", "s5", "transformer"], choices=sorted(BACKBONES))
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=BATCH, help="episodes per update")
    parser.add_argument("--reward-scale", type=float, default=1.0, help="world_model.reward_scale")
    parser.add_argument("--free-nats", type=float, default=1.0,
                        help="world_model.free_nats (the cue is worth only log K nats; 1.0 is DreamerV3's)")
    parser.add_argument("--rep-scale", type=float, default=0.1,
                        help="world_model.rep_scale, the representation KL's weight (0.1 is DreamerV3's)")
    parser.add_argument("--symbols", type=int, default=SYMBOLS, help="K, the number of cues (chance is 1/K)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=None,
                        help="steps each transformer layer attends to (default 64; the episode step "
                             "embedding counts to the window, so G+2 or more lets transformer-pos count the gap)")
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="measure without run.keep_freed_memory's allocator tuning")
    args = parser.parse_args()
    if not args.glibc_malloc_defaults:
        keep_freed_memory()  # as lifelong train does (run.keep_freed_memory)
    torch.set_num_threads(1)
    results: dict[str, dict[int, dict]] = {}
    for backbone in args.backbones:
        results[backbone] = {}
        for gap in args.gaps:
            started = time.perf_counter()
            model = make_model(backbone, args.seed, args.reward_scale, args.symbols, args.free_nats,
                               args.rep_scale, args.window)
            test = CueEpisodes(gap, args.episodes, args.seed + 1000, args.symbols)
            curve = train(model, CueEpisodes(gap, args.batch, args.seed, args.symbols), args.updates, args.lr, test)
            trained = time.perf_counter() - started  # includes the ten tests during training
            last = curve[-1]
            results[backbone][gap] = {**{key: last[key] for key in SCORES}, "train_s": round(trained, 1),
                                      "curve": curve}
            print(f"{backbone} G={gap}: recall {last['recall']:.3f}, answer {last['answer']:.3f}, "
                  f"with the query observed {last['query_recall']:.3f} / {last['query_answer']:.3f}, "
                  f"train {trained:.0f} s, recall over training {[p['recall'] for p in curve]}",
                  file=sys.stderr, flush=True)
    print(f"\nCue recall in imagination (K={args.symbols}, chance {1 / args.symbols:.3f}; {args.updates} updates of B={args.batch} episodes, reward_scale {args.reward_scale}, "
          f"free_nats {args.free_nats}, rep_scale {args.rep_scale}, "
          f"{args.episodes} test episodes, seed {args.seed})")
    print("recall (cue decoded from the imagined feedback) / answer (argmax predicted reward); the same with the "
          "query step observed; train time")
    print("| backbone | " + " | ".join(f"G={g}" for g in args.gaps) + " |")
    print("|---|" + "---|" * len(args.gaps))
    for backbone, row in results.items():
        print(f"| {backbone} | " + " | ".join(
            f"{row[g]['recall']:.2f} / {row[g]['answer']:.2f}; query observed {row[g]['query_recall']:.2f} / "
            f"{row[g]['query_answer']:.2f} ({row[g]['train_s']:.0f} s)" for g in args.gaps) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
