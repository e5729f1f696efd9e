"""``ParamSpace``: the box of per-episode parameters a parameterized env declares and a teacher samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ParamSpace:
    """Named, bounded parameters ``[P]``: ``names[i]`` lies in ``[low[i], high[i]]``."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        names, low, high = tuple(self.names), tuple(float(x) for x in self.low), tuple(float(x) for x in self.high)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if not (len(names) == len(low) == len(high)) or not names:
            raise ValueError(f"param space: names {names}, low {low} and high {high} must have one equal, "
                             "non-zero length")
        for n, lo, hi in zip(names, low, high):
            if not lo <= hi:
                raise ValueError(f"param space: {n} has low={lo} above high={hi}")

    @property
    def dim(self) -> int:
        """Number of parameters ``P``."""
        return len(self.names)

    def low_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Lower bounds as a float32 tensor ``[P]``."""
        return torch.tensor(self.low, dtype=torch.float32, device=device)

    def high_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Upper bounds as a float32 tensor ``[P]``."""
        return torch.tensor(self.high, dtype=torch.float32, device=device)

    def contains(self, params: torch.Tensor) -> torch.Tensor:
        """Per-row bool ``[n]``: every coordinate of ``params [n, P]`` inside the bounds."""
        lo, hi = self.low_tensor(params.device), self.high_tensor(params.device)
        return ((params >= lo) & (params <= hi)).all(-1)

    def clip(self, params: torch.Tensor) -> torch.Tensor:
        """``params [n, P]`` clipped into the bounds."""
        return torch.maximum(torch.minimum(params, self.high_tensor(params.device)), self.low_tensor(params.device))

    def to_dict(self) -> dict[str, Any]:
        """Plain container for configs and checkpoints."""
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ParamSpace":
        """Inverse of ``to_dict``."""
        return cls(tuple(data["names"]), tuple(data["low"]), tuple(data["high"]))

    def center(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The middle of the box as a float32 tensor ``[P]``."""
        return (self.low_tensor(device) + self.high_tensor(device)) / 2

    def check(self, params: torch.Tensor, rows: int | None = None, what: str = "params") -> torch.Tensor:
        """``params`` as float32 ``[rows, P]``; ValueError (one line) for a wrong shape, NaN or a value out of bounds.

        ``rows=None`` accepts any number of rows. Bounds are inclusive and checked
        exactly (teachers clip into them; user-given values out of bounds are a mistake,
        so they are refused rather than silently clipped).
        """
        params = torch.as_tensor(params)
        if params.is_floating_point() or params.dtype in (torch.int32, torch.int64):
            params = params.to(torch.float32)
        else:
            raise ValueError(f"{what}: expected a float tensor, got dtype {params.dtype}")
        if params.dim() == 1 and params.shape[0] == self.dim and rows in (None, 1):
            params = params.unsqueeze(0)
        if params.dim() != 2 or params.shape[1] != self.dim or (rows is not None and params.shape[0] != rows):
            want = f"[{'n' if rows is None else rows}, {self.dim}]"
            raise ValueError(f"{what}: expected shape {want} ({', '.join(self.names)}), got {list(params.shape)}")
        inside = self.contains(params)  # False for NaN too
        if not bool(inside.all()):
            row = int((~inside).nonzero()[0, 0])
            lo, hi = self.low_tensor(params.device), self.high_tensor(params.device)
            bad = ~((params[row] >= lo) & (params[row] <= hi))
            col = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{what}: row {row} has {self.names[col]}={float(params[row, col])!r}, "
                f"outside [{self.low[col]}, {self.high[col]}]"
            )
        return params


class ParamSlots:
    """Per-env parameter bookkeeping for a batch of ``num_envs`` envs: a pending and a current vector per env.

    ``set`` writes pending rows; ``begin`` starts episodes: the starting rows' pending
    params become their current ones (the params of the episode now running). Pending
    params stay until replaced, so an env that is never given new params repeats its
    last ones. Tensors are replaced, never changed in place, so a returned tensor stays
    valid.
    """

    def __init__(self, space: ParamSpace, num_envs: int, default: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.space = space
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        default = space.center(self.device) if default is None else space.check(default, 1, "default params")[0]
        self.default = default.to(self.device)
        self.pending = self.default.expand(self.num_envs, space.dim).clone()
        self.current = self.pending.clone()

    def set(self, params: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Pending params for every env (``params [B, P]``) or for ``rows`` (``params [n, P]``).

        ``rows`` is a bool mask ``[B]`` or int indices ``[n]``; ``params=None`` gives the
        selected envs the default params back.
        """
        if rows is None:
            index = None
            count = self.num_envs
        else:
            rows = torch.as_tensor(rows, device=self.device)
            if rows.dtype == torch.bool:
                if rows.shape != (self.num_envs,):
                    raise ValueError(f"rows: a bool mask must have shape [{self.num_envs}], got {list(rows.shape)}")
                index = rows.nonzero().squeeze(1)
            elif rows.dtype in (torch.int32, torch.int64) and rows.dim() == 1:
                index = rows.long()
                if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_envs):
                    raise ValueError(f"rows: indices must lie in 0..{self.num_envs - 1}, got {index.tolist()}")
            else:
                raise ValueError(f"rows: expected a bool mask [B] or int indices [n], got {rows.dtype} "
                                 f"{list(rows.shape)}")
            count = index.numel()
        if params is None:
            values = self.default.expand(count, self.space.dim)
        else:
            values = self.space.check(params, count).to(self.device)
        self.pending = values.clone() if index is None else self.pending.index_put((index,), values)

    def begin(self, starting: torch.Tensor | None = None) -> torch.Tensor:
        """Start episodes where ``starting`` (bool ``[B]``; None: every row); return the previous current params."""
        before = self.current
        if starting is None:
            self.current = self.pending
        else:
            self.current = torch.where(starting.to(self.device).unsqueeze(1), self.pending, before)
        return before
