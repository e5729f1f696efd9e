"""Cue recall in imagination: does the world model carry a cue across a gap of G steps with the prior alone?

Data: native ``CueRecall`` (K=4 symbols, gap G; an episode is the cue observation, G blank
steps, the query step, and the answer, which rewards 1 iff it names the cue and ends the
episode) with uniformly random actions. All envs reset together and episodes have the
fixed length G+2, so every training batch is B=16 freshly generated whole episodes
(``[G+2, B]`` rows starting at ``is_first``; the answer's reward and termination are
trained on the terminal step from ``final_obs``). No replay reuse: every update sees new
episodes.

Training: ``LatentWorldModel.compute_loss`` with Adam for ``--updates`` updates, one world
model per backbone (gru: recurrent posterior; s5, transformer: nonrecurrent), all with
the same tiny MLPs, 16x16 latents and backbone width 128.

Test (on ``--episodes`` fresh episodes): observe only the cue step with the posterior,
then roll the *prior* open-loop with ``imagine`` (modes, no sampling) through the G blank
steps and the query step with the episodes' own actions, and at the answer take each of
the K possible answers in turn (K copies of every episode); the predicted reward of the
answer step is ``predict_reward`` of the imagined terminal features. An episode counts as
recalled when the true cue's answer gets the highest predicted reward. Chance is 1/K =
0.25. The model never sees an observation after the cue, so the answer can only come from
what the backbone carried.

    python benchmarks/world_model_memory.py [--gaps 32 128 512] [--backbones gru s5 transformer]
        [--updates 300] [--episodes 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lifelong.config import build  # noqa: E402
from lifelong.envs.native import make_task  # noqa: E402
from lifelong.optim import FlatAdam  # noqa: E402
from lifelong.world_models import LatentWorldModel, LatentWorldModelConfig  # noqa: E402

SYMBOLS, BATCH, WIDTH = 4, 16, 128
BACKBONES = {
    "gru": {"name": "gru", "hidden": WIDTH},
    "s5": {"name": "s5", "d_model": WIDTH, "state_size": WIDTH // 2, "layers": 2},
    "transformer": {"name": "transformer", "d_model": WIDTH, "heads": 4, "layers": 2, "window": 64},
    "lstm": {"name": "lstm", "hidden": WIDTH},
    "ffm": {"name": "ffm", "hidden": WIDTH},
}


class CueEpisodes:
    """Whole random-action CueRecall episodes, ``[G+2, n]`` rows per call, from one seeded native env."""

    def __init__(self, gap: int, n: int, seed: int) -> None:
        self.env = make_task("CueRecall", n, seed=seed, symbols=SYMBOLS, gap=gap)
        self.gap, self.n = gap, n
        self.obs = self.env.reset(seed=seed)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def sample(self) -> dict[str, torch.Tensor]:
        """One episode per env: obs, one-hot action, reward, terminated, truncated, is_first, final_obs, cue."""
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "action", "reward", "terminated", "truncated",
                                                                "is_first", "final_obs")}
        for t in range(self.gap + 2):
            index = torch.randint(SYMBOLS, (self.n,), generator=self.gen)
            step = self.env.step(index)
            rows["obs"].append(self.obs)
            rows["action"].append(torch.nn.functional.one_hot(index, SYMBOLS).float())
            rows["is_first"].append(torch.full((self.n,), t == 0))
            for key in ("reward", "terminated", "truncated", "final_obs"):
                rows[key].append(getattr(step, key))
            self.obs = step.obs
        batch = {k: torch.stack(v) for k, v in rows.items()}
        assert bool(batch["terminated"][-1].all()) and bool(step.is_first.all()), "episodes out of step"
        batch["cue"] = batch["obs"][0, :, :SYMBOLS].argmax(-1)
        return batch


def make_model(backbone: str, seed: int, reward_scale: float = 1.0) -> LatentWorldModel:
    """A tiny world model on ``backbone``."""
    torch.manual_seed(seed)
    raw = {"size": "tiny", "stoch": 16, "classes": 16, "backbone": BACKBONES[backbone], "reward_scale": reward_scale}
    return LatentWorldModel((SYMBOLS + 1,), SYMBOLS, build(LatentWorldModelConfig, raw))


def train(model: LatentWorldModel, data: CueEpisodes, updates: int, lr: float) -> list[float]:
    """``updates`` Adam steps on fresh episodes; the reward loss of every 50th update."""
    opt = FlatAdam(model.parameters(), lr=lr, max_grad_norm=1000.0)
    curve = []
    for i in range(updates):
        out = model.compute_loss(data.sample())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i % 50 == 0 or i == updates - 1:
            curve.append(round(float(out.metrics["wm_reward"]), 4))
    return curve


@torch.no_grad()
def recall_accuracy(model: LatentWorldModel, data: CueEpisodes) -> float:
    """Fraction of episodes whose true answer gets the highest reward imagined from the cue step alone."""
    batch = data.sample()
    gap, n = data.gap, data.n
    posterior, _ = model.observe(batch["obs"][:1], torch.zeros(1, n, SYMBOLS), batch["is_first"][:1], sample=False)
    start = model.start_states(posterior, model.initial_state(n, "cpu"))
    start = {"memory": model.backbone.concat_states([start["memory"]] * SYMBOLS),
             **{k: start[k].repeat(SYMBOLS, 1) for k in ("deter", "stoch", "feat")}}
    # Row k * n + b: episode b answering symbol k. Actions 0..G+1 are the episode's, except the answer.
    answers = torch.nn.functional.one_hot(torch.arange(SYMBOLS).repeat_interleave(n), SYMBOLS).float()
    actions = batch["action"].repeat(1, SYMBOLS, 1)
    actions[gap + 1] = answers
    step = iter(range(gap + 3))

    def policy(feat: torch.Tensor) -> torch.Tensor:
        return actions[min(next(step), gap + 1)]

    traj = model.imagine(policy, start, gap + 2, sample=False)
    reward = model.predict_reward(traj["feat"][gap + 2]).view(SYMBOLS, n)  # reward of the answer
    return float((reward.argmax(0) == batch["cue"]).float().mean())


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[int, dict]] = {}
    for backbone in args.backbones:
        results[backbone] = {}
        for gap in args.gaps:
            started = time.perf_counter()
            model = make_model(backbone, args.seed, args.reward_scale)
            curve = train(model, CueEpisodes(gap, args.batch, args.seed), args.updates, args.lr)
            trained = time.perf_counter() - started
            accuracy = recall_accuracy(model, CueEpisodes(gap, args.episodes, args.seed + 1000))
            results[backbone][gap] = {"accuracy": accuracy, "train_s": round(trained, 1),
                                      "test_s": round(time.perf_counter() - started - trained, 1),
                                      "reward_loss": curve}
            print(f"{backbone} G={gap}: accuracy {accuracy:.3f}, train {trained:.0f} s, reward loss {curve}",
                  file=sys.stderr, flush=True)
    print(f"\nCue recall in imagination (K={SYMBOLS}, chance 0.25; {args.updates} updates of B={args.batch} episodes, reward_scale {args.reward_scale}, "
          f"{args.episodes} test episodes, seed {args.seed})")
    print("| backbone | " + " | ".join(f"G={g}" for g in args.gaps) + " |")
    print("|---|" + "---|" * len(args.gaps))
    for backbone, row in results.items():
        print(f"| {backbone} | " + " | ".join(f"{row[g]['accuracy']:.2f} ({row[g]['train_s']:.0f} s)"
                                              for g in args.gaps) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
