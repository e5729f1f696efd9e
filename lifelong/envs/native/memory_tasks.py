"""POPGym's diagnostic memory tasks as batched torch envs: RepeatPrevious, RepeatFirst, CountRecall, Autoencode.

The rules follow POPGym's code (proroklab/popgym, ``popgym/envs``). Cards are dealt with
``NativeVecEnv.deal``: one card at a time from per-category counts of the cards left, which has
the distribution of dealing from a shuffled deck. A deck of ``num_decks`` decks has
``52 * num_decks`` cards: 4 suits, 2 colours or 13 ranks, equally many of each.
"""

from __future__ import annotations

import torch
from gymnasium import spaces

from lifelong.envs.native.base import NativeVecEnv, State, one_hot, one_hot_box

DECK_SIZE = 52
CATEGORIES = {"colors": 2, "suits": 4, "ranks": 13}


def check_num_decks(num_decks: int) -> int:
    """``num_decks`` as an int; ValueError unless it is at least 1."""
    if int(num_decks) < 1:
        raise ValueError(f"num_decks must be >= 1, got {num_decks}")
    return int(num_decks)


def full_deck(n: int, categories: int, per_category: int, device: torch.device) -> torch.Tensor:
    """Card counts ``[n, categories]`` of ``n`` full decks (float32: exact for whole numbers, no casts)."""
    return torch.full((n, categories), float(per_category), device=device)


class RepeatPrevious(NativeVecEnv):
    """Output the suit of the card dealt k-1 steps before the current one (POPGym RepeatPrevious).

    Observation: the suit of the card just dealt (one-hot, 4). Action: a suit. An episode
    deals all ``N = 52 * num_decks`` cards and lasts ``N - 1`` steps (terminated). As in
    POPGym's code, at step ``t`` (0-based, cards ``c_0..c_t`` seen) the target is the suit
    of ``c_{t+1-k}``, the k-th most recent card counting the current one; steps
    ``t < k - 1`` have no target and reward 0, the other ``N - k`` steps reward
    ``+-1 / (N - k)``, so returns lie in [-1, 1].
    """

    def __init__(self, num_envs: int, *, num_decks: int = 1, k: int = 4, **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        self.cards = DECK_SIZE * self.num_decks
        if not 1 <= int(k) < self.cards:
            raise ValueError(f"k must be in 1..{self.cards - 1} for num_decks={num_decks}, got {k}")
        self.k = int(k)
        self.reward_scale = 1.0 / (self.cards - self.k)
        super().__init__(num_envs, one_hot_box(4), spaces.Discrete(4), **common)
        self._reward = torch.tensor([-self.reward_scale, self.reward_scale], device=self.device)

    def initial_state(self, n: int) -> State:
        card, remaining = self.deal_first(n, 4, self.cards // 4)
        # the suits of the last k cards, oldest first: column 0 is the next step's target
        history = torch.zeros(n, self.k, dtype=torch.uint8, device=self.device)
        history[:, -1] = card
        return {"remaining": remaining, "history": history, "obs": one_hot(card, 4)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        t, history = state["t"], state["history"]
        # at step t the target c_{t+1-k} is the oldest of the last k cards
        reward = self._reward[(action == history[:, 0]).long()].masked_fill_(t < self.k - 1, 0.0)
        card = self.deal(state["remaining"])
        dealt = one_hot(card, 4)
        new = {
            "remaining": state["remaining"] - dealt,
            "history": torch.cat([history[:, 1:], card.to(torch.uint8).unsqueeze(1)], 1),
            "obs": dealt,
        }
        return new, reward, t >= self.cards - 2


class RepeatFirst(NativeVecEnv):
    """Output the suit of the episode's first card at every step (POPGym RepeatFirst).

    Observation: the suit of the card just dealt (one-hot, 4). An episode lasts
    ``N - 1`` steps (``N = 52 * num_decks``), each rewarding ``+-1 / (N - 1)``.
    """

    def __init__(self, num_envs: int, *, num_decks: int = 1, **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        self.cards = DECK_SIZE * self.num_decks
        self.reward_scale = 1.0 / (self.cards - 1)
        super().__init__(num_envs, one_hot_box(4), spaces.Discrete(4), **common)

    def initial_state(self, n: int) -> State:
        card, remaining = self.deal_first(n, 4, self.cards // 4)
        return {"remaining": remaining, "first": card, "obs": one_hot(card, 4)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        reward = torch.where(action == state["first"], self.reward_scale, -self.reward_scale)
        card = self.deal(state["remaining"])
        dealt = one_hot(card, 4)
        new = {"remaining": state["remaining"] - dealt, "first": state["first"], "obs": dealt}
        return new, reward, state["t"] >= self.cards - 2


class CountRecall(NativeVecEnv):
    """Say how many cards of the queried kind have been dealt so far (POPGym CountRecall).

    Two decks are dealt in parallel: a value card (counted) and a query card. Observation:
    one-hot value kind then one-hot query kind (``2 * d`` with ``d`` kinds: colours 2,
    suits 4, ranks 13). Action: a count ``0..N/d``. The answer at step ``t`` is the number
    of value cards of the query's kind among those seen so far (the current one
    included). ``N - 1`` steps, each rewarding ``+-1 / (N - 1)``.
    """

    def __init__(self, num_envs: int, *, num_decks: int = 1, deck_type: str = "colors", **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        if deck_type not in CATEGORIES:
            raise ValueError(f"deck_type must be one of {', '.join(CATEGORIES)}, got {deck_type!r}")
        self.deck_type = deck_type
        self.kinds = CATEGORIES[deck_type]
        self.cards = DECK_SIZE * self.num_decks
        self.per_kind = self.cards // self.kinds
        self.reward_scale = 1.0 / (self.cards - 1)
        super().__init__(num_envs, one_hot_box(self.kinds, self.kinds), spaces.Discrete(self.per_kind + 1), **common)

    def _obs(self, value: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return torch.cat([one_hot(value, self.kinds), one_hot(query, self.kinds)], -1)

    def initial_state(self, n: int) -> State:
        value, values_left = self.deal_first(n, self.kinds, self.per_kind)
        query, queries_left = self.deal_first(n, self.kinds, self.per_kind)
        return {
            "values_left": values_left,
            "queries_left": queries_left,
            "query": query,
            "obs": self._obs(value, query),
        }

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        values_left = state["values_left"]
        seen = self.per_kind - values_left.gather(1, state["query"].unsqueeze(1)).squeeze(1)
        reward = torch.where(action == seen, self.reward_scale, -self.reward_scale)
        value = self.deal(values_left)
        query = self.deal(state["queries_left"])
        value_dealt, query_dealt = one_hot(value, self.kinds), one_hot(query, self.kinds)
        new = {
            "values_left": values_left - value_dealt,
            "queries_left": state["queries_left"] - query_dealt,
            "query": query,
            "obs": torch.cat([value_dealt, query_dealt], -1),
        }
        return new, reward, state["t"] >= self.cards - 2


class Autoencode(NativeVecEnv):
    """Watch a deck's suits, then recite them in reverse order (POPGym Autoencode).

    Observation: one-hot mode (index 1 = watch, 0 = play) then one-hot suit (6 values).
    Watch phase: the first observation and ``N - 1`` steps deal the ``N`` cards (actions
    ignored, reward 0); the last card is shown with the mode already switched to play.
    Play phase: ``N`` steps, the target of play step ``j`` is the suit of card
    ``N - 1 - j``, reward ``+-1 / N``; the observation is (play, suit 0). ``2N - 1`` steps.
    """

    def __init__(self, num_envs: int, *, num_decks: int = 1, **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        self.cards = DECK_SIZE * self.num_decks
        self.reward_scale = 1.0 / self.cards
        super().__init__(num_envs, one_hot_box(2, 4), spaces.Discrete(4), **common)

    def _obs(self, mode: torch.Tensor, suit: torch.Tensor) -> torch.Tensor:
        return torch.cat([one_hot(mode, 2), one_hot(suit, 4)], -1)

    def initial_state(self, n: int) -> State:
        card, remaining = self.deal_first(n, 4, self.cards // 4)
        sequence = torch.zeros(n, self.cards, dtype=torch.uint8, device=self.device)
        sequence[:, 0] = card.to(torch.uint8)
        mode = torch.full_like(card, 1 if self.cards > 1 else 0)
        return {"remaining": remaining, "sequence": sequence, "obs": self._obs(mode, card)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        t = state["t"]
        last = self.cards - 1
        watching = t < last
        # watch: deal card t+1 into its slot (the slot is clamped in play, where nothing is dealt)
        card = self.deal(state["remaining"])
        slot = (t + 1).clamp(max=last).unsqueeze(1)
        sequence = torch.where(
            watching.unsqueeze(1),
            state["sequence"].scatter(1, slot, card.to(torch.uint8).unsqueeze(1)),
            state["sequence"],
        )
        remaining = state["remaining"] - one_hot(card, 4) * watching.unsqueeze(1)
        # play step j = t - last recites card last - j = 2 * last - t
        target_slot = (2 * last - t).clamp(0, last).unsqueeze(1)
        target = state["sequence"].gather(1, target_slot).squeeze(1).long()
        play_reward = torch.where(action == target, self.reward_scale, -self.reward_scale)
        reward = torch.where(watching, 0.0, play_reward)
        mode = torch.where(t + 1 < last, 1, 0)
        suit = torch.where(watching, card, 0)
        new = {"remaining": remaining, "sequence": sequence, "obs": self._obs(mode, suit)}
        return new, reward, t >= 2 * last
