"""``CueRecall``: remember one symbol across a long blank gap, then name it (a memory probe for world models)."""

from __future__ import annotations

import torch
from gymnasium import spaces

from lifelong.envs.native.base import NativeVecEnv, State, one_hot, one_hot_box


class CueRecall(NativeVecEnv):
    """A cue (one of ``symbols`` K), ``gap`` G blank steps, then a query: answer with the cue.

    Observation ``[K + 1]``: the one-hot cue on the first step, all zeros during the gap,
    and only the last entry (the query flag) set on the query step. Action: a symbol
    ``0..K-1``, ignored (reward 0) until the query step; the answer given there rewards 1
    if it is the cue and 0 otherwise and ends the episode (terminated). The final
    observation of the episode (``final_obs``) is feedback: the one-hot cue again, with the
    query flag set. An episode is ``G + 2`` steps; the best return is 1, a guess gets
    ``1 / K`` on average. Easy is K=4, G=32 (the defaults), Medium K=8, G=128, Hard K=16,
    G=512.

    Why the feedback: with actions drawn at random, the answer's reward depends on the
    cue only jointly with the action, and nothing else in the data depends on the
    action, so a world model's losses wash the action out of its state before the
    reward's joint signal is learned. Showing the cue after the answer gives the
    model's prior a direct target that needs the cue carried across the gap, the
    quantity the env exists to probe. An agent never acts on the final observation.
    """

    def __init__(self, num_envs: int, *, symbols: int = 4, gap: int = 32, **common) -> None:
        if int(symbols) < 2:
            raise ValueError(f"symbols must be >= 2, got {symbols}")
        if int(gap) < 0:
            raise ValueError(f"gap must be >= 0, got {gap}")
        self.symbols = int(symbols)
        self.gap = int(gap)
        super().__init__(num_envs, one_hot_box(self.symbols, 1), spaces.Discrete(self.symbols), **common)

    def initial_state(self, n: int) -> State:
        cue = self.randint(self.symbols, n)
        obs = torch.cat([one_hot(cue, self.symbols), torch.zeros(n, 1, device=self.device)], -1)
        return {"cue": cue, "obs": obs}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        t = state["t"]
        answering = t == self.gap + 1
        reward = (answering & (action == state["cue"])).to(torch.float32)
        flag = ((t + 1 == self.gap + 1) | answering).to(torch.float32).unsqueeze(1)
        shown = one_hot(state["cue"], self.symbols) * answering.unsqueeze(1)  # feedback after the answer
        obs = torch.cat([shown, flag], -1)
        return {"cue": state["cue"], "obs": obs}, reward, answering
