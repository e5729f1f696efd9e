"""Memory-in-imagination probe on native ``CueRecall``: random-action episodes and the recall scores.

A world model observes only an episode's cue step, then rolls its *prior* open-loop through
the gap, the query and the answer with the episode's own actions (modes, no sampling), once
for every possible answer. Two scores, chance ``1 / K``:

* ``recall``: the cue is the argmax of the decoded feedback observation imagined after the
  answer (CueRecall shows the cue again in ``final_obs``), over all K answers: what the
  prior carried across the gap.
* ``answer``: the true cue's answer gets the highest predicted reward among the K answers.

With ``observe_query`` the model also observes the query step: the gap is imagined as
above, then the posterior of the true query observation is taken from the imagined state
and the K answers are imagined from there. The cue can still only come through the
imagined gap (the query observation does not show it), but the model no longer has to
predict *when* the query comes, which the open-loop scores also demand: a model that
carries the cue but miscounts the G blank steps imagines no query, and so no feedback.

Used by ``benchmarks/world_model_memory.py`` and the slow learning test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lifelong.envs.native import make_task
from lifelong.world_models.latent import LatentWorldModel

ROW_KEYS = ("obs", "action", "reward", "terminated", "truncated", "is_first", "final_obs")


class CueEpisodes:
    """Whole uniformly-random-action CueRecall episodes, ``[G+2, n]`` rows per call, from one seeded native env.

    All ``n`` envs reset together and episodes have the fixed length ``G + 2``, so every
    call returns ``n`` fresh whole episodes starting at ``is_first`` (the answer's reward,
    termination and feedback observation are in the last row, ``final_obs`` included).
    """

    def __init__(self, gap: int, n: int, seed: int, symbols: int = 4) -> None:
        self.env = make_task("CueRecall", n, seed=seed, symbols=symbols, gap=gap)
        self.gap, self.n, self.symbols = gap, n, symbols
        self.obs = self.env.reset(seed=seed)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def sample(self) -> dict[str, torch.Tensor]:
        """Replay-style rows (obs, one-hot action, reward, terminated, truncated, is_first, final_obs) and ``cue [n]``."""
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in ROW_KEYS}
        for t in range(self.gap + 2):
            index = torch.randint(self.symbols, (self.n,), generator=self.gen)
            step = self.env.step(index)
            rows["obs"].append(self.obs)
            rows["action"].append(F.one_hot(index, self.symbols).float())
            rows["is_first"].append(torch.full((self.n,), t == 0))
            for key in ("reward", "terminated", "truncated", "final_obs"):
                rows[key].append(getattr(step, key))
            self.obs = step.obs
        batch = {k: torch.stack(v) for k, v in rows.items()}
        if not (bool(batch["terminated"][-1].all()) and bool(step.is_first.all())):
            raise RuntimeError("CueRecall episodes out of step: every env must end at the last row")
        batch["cue"] = batch["obs"][0, :, :self.symbols].argmax(-1)
        return batch


@torch.no_grad()
def cue_recall_scores(model: LatentWorldModel, data: CueEpisodes, observe_query: bool = False) -> tuple[float, float]:
    """``(recall, answer)`` accuracies of ``model`` imagined from the cue step (and the query step if ``observe_query``)."""
    batch = data.sample()
    gap, n, k = data.gap, data.n, data.symbols
    device = model.first_input.device
    batch = {key: value.to(device) for key, value in batch.items()}
    state = model.initial_state(n, device)
    posterior, _ = model.observe(batch["obs"][:1], torch.zeros(1, n, k, device=device), batch["is_first"][:1],
                                 state, sample=False)
    start = model.start_states(posterior, state)
    actions = batch["action"]  # action t is taken at step t; step G+1 is the query, its action the answer
    if observe_query:
        steps = iter(range(gap + 1))
        gap_trip = model.imagine(lambda feat: actions[next(steps)], start, gap, sample=False)
        state = (gap_trip["memory"], gap_trip["stoch"][gap])
        query = gap + 1
        no_reset = torch.zeros(1, n, dtype=torch.bool, device=device)
        posterior, _ = model.observe(batch["obs"][query:query + 1], actions[gap:gap + 1], no_reset, state,
                                     sample=False)
        start, actions = model.start_states(posterior, state), actions[query:]
    # Row a * n + b: episode b answering symbol a. The last action before the feedback is the answer.
    start = {"memory": model.backbone.concat_states([start["memory"]] * k),
             **{key: start[key].repeat(k, 1) for key in ("deter", "stoch", "feat")}}
    horizon = actions.shape[0]
    actions = actions.repeat(1, k, 1)
    actions[-1] = F.one_hot(torch.arange(k, device=device).repeat_interleave(n), k).float()
    step = iter(range(horizon + 1))

    def policy(feat: torch.Tensor) -> torch.Tensor:
        return actions[min(next(step), horizon - 1)]

    final = model.imagine(policy, start, horizon, sample=False)["feat"][horizon]  # after the answer
    cue = batch["cue"]
    feedback = model.decode(final)[:, :k].argmax(-1).view(k, n)
    reward = model.predict_reward(final).view(k, n)
    return float((feedback == cue).float().mean()), float((reward.argmax(0) == cue).float().mean())
