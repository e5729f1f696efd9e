"""POPGym's game tasks as batched torch envs: MultiarmedBandit, HigherLower, MineSweeper, Battleship, Concentration.

Rules and reward scales follow POPGym's code (proroklab/popgym, ``popgym/envs``). Grid
actions, a ``MultiDiscrete([rows, cols])`` pair in POPGym, are one ``Discrete(rows * cols)``
index here (``row * cols + col``), since the platform's actions are Discrete or Box.
MultiarmedBandit, MineSweeper, Battleship and Concentration need the previous action to
be solvable (POPGym's ``obs_requires_prev_action``), so they append it to the
observation by default (``prev_action=False`` turns that off).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from gymnasium import spaces

from lifelong.envs.native.base import NativeVecEnv, State, one_hot, one_hot_box
from lifelong.envs.native.memory_tasks import CATEGORIES, DECK_SIZE, check_num_decks, full_deck


class MultiarmedBandit(NativeVecEnv):
    """Episodic bandit: arms pay with probabilities drawn U(0, 1) per episode (POPGym MultiarmedBandit).

    Observation: one-hot payout of the last pull (0 at reset), then the previous action.
    Reward ``+1 / L`` for a payout, ``-1 / L`` otherwise; truncated after ``L`` steps.
    """

    default_prev_action = True

    def __init__(self, num_envs: int, *, num_bandits: int = 10, episode_length: int = 200, **common) -> None:
        if int(num_bandits) < 1:
            raise ValueError(f"num_bandits must be >= 1, got {num_bandits}")
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.num_bandits = int(num_bandits)
        self.episode_length = int(episode_length)
        self.default_time_limit = self.episode_length
        super().__init__(num_envs, one_hot_box(2), spaces.Discrete(self.num_bandits), **common)

    def initial_state(self, n: int) -> State:
        probs = self.rand(n, self.num_bandits)
        return {"probs": probs, "obs": one_hot(torch.zeros(n, dtype=torch.int64, device=self.device), 2)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        probs = state["probs"]
        paid = self.rand(probs.shape[0]) < probs.gather(1, action.unsqueeze(1)).squeeze(1)
        reward = torch.where(paid, 1.0, -1.0) / self.episode_length
        terminated = torch.zeros_like(paid)
        return {"probs": probs, "obs": one_hot(paid.long(), 2)}, reward, terminated


class HigherLower(NativeVecEnv):
    """Guess whether the next card's rank is higher (action 0) or lower (1) (POPGym HigherLower).

    Observation: the rank of the current card (one-hot, 13). Reward ``+-1 / N`` for a right
    or wrong guess, 0 for equal ranks; ``N - 1`` steps (``N = 52 * num_decks``).
    """

    def __init__(self, num_envs: int, *, num_decks: int = 1, **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        self.cards = DECK_SIZE * self.num_decks
        self.reward_scale = 1.0 / self.cards
        super().__init__(num_envs, one_hot_box(13), spaces.Discrete(2), **common)

    def initial_state(self, n: int) -> State:
        rank, remaining = self.deal_first(n, 13, self.cards // 13)
        return {"remaining": remaining, "rank": rank, "obs": one_hot(rank, 13)}

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        current = state["rank"]
        rank = self.deal(state["remaining"])
        right = (rank > current) == (action == 0)
        reward = torch.where(rank == current, 0.0, torch.where(right, self.reward_scale, -self.reward_scale))
        dealt = one_hot(rank, 13)
        new = {"remaining": state["remaining"] - dealt, "rank": rank, "obs": dealt}
        return new, reward, state["t"] >= self.cards - 2


MINESWEEPER = {"easy": ((4, 4), 2), "medium": ((6, 6), 6), "hard": ((8, 8), 10)}


class MineSweeper(NativeVecEnv):
    """MineSweeper with the board hidden (POPGym MineSweeper): click tiles, hear the mine count around them.

    Observation: the number of mines in the 3x3 block around the clicked tile (itself
    included; one-hot, 0 at reset), then the previous action. Rewards: a new clear tile
    ``1 / L``, a tile clicked before ``-0.5 / (L - 2)``, a mine ``-0.5 - 1 / L`` (ends the
    episode); ``L = tiles - mines`` steps at most, won when every clear tile is seen.
    """

    default_prev_action = True

    def __init__(self, num_envs: int, *, difficulty: str = "easy", **common) -> None:
        if difficulty not in MINESWEEPER:
            raise ValueError(f"difficulty must be one of {', '.join(MINESWEEPER)}, got {difficulty!r}")
        self.difficulty = difficulty
        (self.rows, self.cols), self.num_mines = MINESWEEPER[difficulty]
        self.tiles = self.rows * self.cols
        self.max_episode_length = self.tiles - self.num_mines
        self.success_reward = 1.0 / self.max_episode_length
        self.fail_reward = -0.5 - self.success_reward
        # -0.5 spread over the L - 2 steps that can lie between a first (successful) click and a
        # final mine, so that the lowest possible return is -1
        self.repeat_reward = -0.5 / (self.max_episode_length - 2)
        self.default_time_limit = self.max_episode_length
        self.obs_classes = min(self.num_mines + 1, 10)
        super().__init__(num_envs, one_hot_box(self.obs_classes), spaces.Discrete(self.tiles), **common)

    def initial_state(self, n: int) -> State:
        # a uniform set of mine tiles: the num_mines largest of i.i.d. uniform keys
        chosen = self.rand(n, self.tiles).topk(self.num_mines, dim=1).indices
        mines = torch.zeros(n, self.tiles, dtype=torch.bool, device=self.device).scatter_(1, chosen, True)
        # mines in each 3x3 block (centre included): nine shifted views of the zero-padded grid
        # (cheaper than conv2d, whose oneDNN kernels are rebuilt for every new number of rows)
        padded = F.pad(mines.view(n, self.rows, self.cols).to(torch.uint8), (1, 1, 1, 1))
        rows, cols = self.rows, self.cols
        counts = sum(padded[:, r : r + rows, c : c + cols] for r in range(3) for c in range(3))
        counts = counts.reshape(n, self.tiles).long()
        zero = torch.zeros(n, dtype=torch.int64, device=self.device)
        return {
            "mines": mines,
            "counts": counts,
            "seen": torch.zeros_like(mines),
            "obs": one_hot(zero, self.obs_classes),
        }

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        tile = action.unsqueeze(1)
        mines, seen = state["mines"], state["seen"]
        is_mine = mines.gather(1, tile).squeeze(1)
        was_seen = seen.gather(1, tile).squeeze(1)
        reward = torch.where(is_mine, self.fail_reward, torch.where(was_seen, self.repeat_reward, self.success_reward))
        seen = seen.scatter(1, tile, (~is_mine).unsqueeze(1) | was_seen.unsqueeze(1))
        terminated = is_mine | (seen | mines).all(1)
        count = state["counts"].gather(1, tile).squeeze(1).clamp(max=self.obs_classes - 1)
        new = {"mines": mines, "counts": state["counts"], "seen": seen, "obs": one_hot(count, self.obs_classes)}
        return new, reward, terminated


def ship_placements(board: int, size: int) -> torch.Tensor:
    """Every placement of a ship of ``size`` tiles on a ``board x board`` grid: float masks ``[P, board**2]``."""
    masks = []
    for vertical in (False, True) if size > 1 else (False,):
        span_r, span_c = (size, 1) if vertical else (1, size)
        for r in range(board - span_r + 1):
            for c in range(board - span_c + 1):
                m = torch.zeros(board, board)
                m[r : r + span_r, c : c + span_c] = 1.0
                masks.append(m.view(-1))
    return torch.stack(masks)


class Battleship(NativeVecEnv):
    """Battleship on a hidden board (POPGym Battleship): hear hit or miss for every shot.

    Ships of sizes 2, 3, 3, 4 are placed uniformly over the non-overlapping placements,
    one after another. Observation: one-hot hit (a ship tile not shot before), then the
    previous action. Reward ``1 / H`` for a hit (``H`` = 12 ship tiles) and
    ``-1 / (board**2 - H)`` otherwise; won when every ship tile is hit, truncated after
    ``board**2`` shots. As in POPGym, returns are at most 1 but can fall below -1 (to
    ``-board**2 / (board**2 - H)`` when every shot misses, repeated shots included).
    """

    default_prev_action = True

    def __init__(self, num_envs: int, *, board_size: int = 10, ship_sizes: tuple[int, ...] = (2, 3, 3, 4),
                 **common) -> None:
        self.board_size = int(board_size)
        self.ship_sizes = tuple(int(s) for s in ship_sizes)
        self.needed_hits = sum(self.ship_sizes)
        self.tiles = self.board_size**2
        if not self.ship_sizes or min(self.ship_sizes) < 1 or max(self.ship_sizes) > self.board_size:
            raise ValueError(f"ship_sizes must be sizes in 1..{self.board_size}, got {list(ship_sizes)}")
        if self.needed_hits >= self.tiles // 2:  # keeps a free placement for every ship likely
            raise ValueError(
                f"ship_sizes {list(ship_sizes)} must cover less than half of the {board_size}x{board_size} board"
            )
        self.hit_reward = 1.0 / self.needed_hits
        self.miss_reward = -1.0 / (self.tiles - self.needed_hits)
        self.default_time_limit = self.tiles
        super().__init__(num_envs, one_hot_box(2), spaces.Discrete(self.tiles), **common)
        self._placements = {s: ship_placements(self.board_size, s).to(self.device) for s in set(self.ship_sizes)}

    def initial_state(self, n: int) -> State:
        board = torch.zeros(n, self.tiles, device=self.device)
        for size in self.ship_sizes:  # a loop over the (few) ships, each placed in every env at once
            placements = self._placements[size]
            blocked = (board @ placements.T) > 0
            keys = self.rand(n, placements.shape[0]).masked_fill(blocked, -1.0)
            board = board + placements[keys.argmax(1)]
        zero = torch.zeros(n, dtype=torch.int64, device=self.device)
        return {
            "ships": board > 0,
            "shot": torch.zeros(n, self.tiles, dtype=torch.bool, device=self.device),
            "hits": zero,
            "obs": one_hot(zero, 2),
        }

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        tile = action.unsqueeze(1)
        hit = state["ships"].gather(1, tile).squeeze(1) & ~state["shot"].gather(1, tile).squeeze(1)
        hits = state["hits"] + hit.long()
        reward = torch.where(hit, self.hit_reward, self.miss_reward)
        new = {
            "ships": state["ships"],
            "shot": state["shot"].scatter(1, tile, True),
            "hits": hits,
            "obs": one_hot(hit.long(), 2),
        }
        return new, reward, hits >= self.needed_hits


class Concentration(NativeVecEnv):
    """Concentration (POPGym Concentration): flip face-down cards two at a time to find matching pairs.

    Observation: for every card position, its kind if face up or in play, else "face
    down" (one-hot over ``kinds + 1`` per card, concatenated), then the previous action.
    Action: the position to flip. A matched pair rewards ``1 / (N / 2)`` and stays face up;
    a mismatch ``-2 / L``; flipping a face-up card ``-1 / L`` per card in play. Won when
    every card is face up, truncated after ``L = ceil(2N - N / (2N - 1))`` steps.

    The layout is dealt lazily: a card's kind is drawn from the cards left the first
    time it is flipped, which has the distribution of a shuffled layout.
    """

    default_prev_action = True

    def __init__(self, num_envs: int, *, num_decks: int = 1, deck_type: str = "ranks", **common) -> None:
        self.num_decks = check_num_decks(num_decks)
        if deck_type not in ("colors", "ranks"):
            raise ValueError(f"deck_type must be colors or ranks (suits have an odd count), got {deck_type!r}")
        self.deck_type = deck_type
        self.kinds = CATEGORIES[deck_type]
        self.cards = DECK_SIZE * self.num_decks
        self.episode_length = math.ceil(2 * self.cards - (self.cards / (2 * self.cards - 1)))
        self.success_reward = 1.0 / (self.cards // 2)
        self.failure_reward = -1.0 / self.episode_length
        self.default_time_limit = self.episode_length
        obs_space = one_hot_box(*([self.kinds + 1] * self.cards))
        super().__init__(num_envs, obs_space, spaces.Discrete(self.cards), **common)

    def _obs(self, shown: torch.Tensor) -> torch.Tensor:
        return one_hot(shown, self.kinds + 1).flatten(1)

    def initial_state(self, n: int) -> State:
        kinds = torch.full((n, self.cards), -1, dtype=torch.int64, device=self.device)  # -1: not dealt yet
        return {
            "kinds": kinds,
            "left": full_deck(n, self.kinds, self.cards // self.kinds, self.device),
            "face_up": torch.zeros(n, self.cards, dtype=torch.bool, device=self.device),
            "first": torch.full((n,), -1, dtype=torch.int64, device=self.device),  # card in play, -1: none
            "obs": self._obs(torch.full((n, self.cards), self.kinds, dtype=torch.int64, device=self.device)),
        }

    def transition(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        card = action.unsqueeze(1)
        kinds, face_up, first = state["kinds"], state["face_up"], state["first"]
        kind = kinds.gather(1, card).squeeze(1)
        new_card = kind < 0
        drawn = self.deal(state["left"])
        kind = torch.where(new_card, drawn, kind)
        left = state["left"] - one_hot(drawn, self.kinds) * new_card.unsqueeze(1)
        kinds = kinds.scatter(1, card, kind.unsqueeze(1))

        has_first = first >= 0
        first_idx = first.clamp(min=0).unsqueeze(1)
        positions = torch.arange(self.cards, device=self.device)
        in_play = (positions == card) | ((positions == first_idx) & has_first.unsqueeze(1))
        shown = torch.where(face_up | in_play, kinds, self.kinds)

        already_up = face_up.gather(1, card).squeeze(1)
        first_kind = kinds.gather(1, first_idx).squeeze(1)
        match = has_first & ~already_up & (first_kind == kind) & (first.ne(action))
        in_play_count = 1.0 + has_first.to(torch.float32)
        reward = torch.where(
            already_up,
            self.failure_reward * in_play_count,
            torch.where(has_first, torch.where(match, self.success_reward, 2 * self.failure_reward), 0.0),
        )
        face_up = face_up | (in_play & match.unsqueeze(1))
        first = torch.where(already_up | has_first, -1, action)
        new = {"kinds": kinds, "left": left, "face_up": face_up, "first": first, "obs": self._obs(shown)}
        return new, reward, face_up.all(1)
