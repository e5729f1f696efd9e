"""TensorBoard scalars, episode statistics and the terminal progress bar of a run.

Scalar names are stable and documented in the README: ``charts/episodic_return``,
``charts/episodic_length``, ``charts/sps``, ``time/env``, ``time/inference``,
``time/learn``, ``losses/<name>``, ``eval/return``. The x-axis is environment steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch


class Logger:
    """Writes scalars to TensorBoard and keeps the progress bar up to date.

    ``start_step`` is the global step of the run when this logger opens; on a
    resume the TensorBoard writer purges events past it, so curves continue on
    the same step axis instead of restarting or overlapping.
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        window: int = 20,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.total_steps = total_steps
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Events logged after the checkpoint we resume from belong to a lost future: purge them.
            self._writer = SummaryWriter(str(self.log_dir), purge_step=start_step + 1 if start_step > 0 else None)
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[float] = deque(maxlen=window)
        self._pending_returns: list[torch.Tensor] = []
        self._pending_lengths: list[torch.Tensor] = []
        self._bar = None
        self._want_bar = progress
        self._start_step = start_step
        self._sps_step = start_step
        self._flushed_step = start_step
        self._sps_time = time.perf_counter()
        self._timers: dict[str, float] = {}

    def _open_bar(self) -> None:
        # Opened on first use, so errors raised while a trainer is being built print cleanly.
        from tqdm import tqdm

        self._want_bar = False
        self._bar = tqdm(
            total=self.total_steps,
            initial=self._start_step,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=0.5,
        )

    # ----------------------------------------------------------------- scalars
    def scalar(self, name: str, value: float, step: int) -> None:
        """Log one scalar at env step ``step``."""
        if self._writer is not None:
            self._writer.add_scalar(name, float(value), step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log several scalars at env step ``step``."""
        for name, value in values.items():
            self.scalar(name, value, step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        """Log an image tensor ``[3, H, W]`` in [0, 1]."""
        if self._writer is not None:
            self._writer.add_image(name, image, step)

    # ---------------------------------------------------------------- episodes
    def episodes(self, episode: dict[str, torch.Tensor] | None) -> None:
        """Collect the episodes that ended at one step (``Step.info['episode']``).

        Kept as tensors until ``flush`` so that the hot loop never synchronises.
        """
        if episode is None:
            return
        done = episode["done"]
        self._pending_returns.append(episode["return"][done])
        self._pending_lengths.append(episode["length"][done])

    def _drain(self) -> tuple[list[float], list[float]]:
        if not self._pending_returns:
            return [], []
        returns = torch.cat(self._pending_returns).float().cpu().tolist()
        lengths = torch.cat(self._pending_lengths).float().cpu().tolist()
        self._pending_returns.clear()
        self._pending_lengths.clear()
        self.recent_returns.extend(returns)
        self.recent_lengths.extend(lengths)
        return returns, lengths

    # -------------------------------------------------------------- timing
    def add_time(self, name: str, seconds: float) -> None:
        """Accumulate wall time under ``time/<name>`` until the next flush."""
        self._timers[name] = self._timers.get(name, 0.0) + seconds

    def flush(self, step: int, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Write episode statistics, SPS and timers at ``step``; refresh the bar; return what was written."""
        if step == self._flushed_step and not self._pending_returns and not extra:
            return {}
        returns, lengths = self._drain()
        now = time.perf_counter()
        elapsed = max(now - self._sps_time, 1e-9)
        sps = (step - self._sps_step) / elapsed
        out: dict[str, float] = {"charts/sps": sps}
        if returns:
            out["charts/episodic_return"] = sum(returns) / len(returns)
            out["charts/episodic_length"] = sum(lengths) / len(lengths)
        for name, seconds in self._timers.items():
            out[f"time/{name}"] = seconds / elapsed  # fraction of wall time in this interval
        if extra:
            out.update(extra)
        self.scalars(out, step)
        self._timers.clear()
        self._sps_step, self._sps_time, self._flushed_step = step, now, step
        self.progress(step, sps=sps)
        return out

    def progress(self, step: int, sps: float | None = None, **fields: Any) -> None:
        """Move the progress bar to ``step`` and show SPS and the recent mean return."""
        if self._want_bar:
            self._open_bar()
        if self._bar is None:
            return
        self._bar.update(max(0, step - self._bar.n))
        post = {}
        if sps is not None:
            post["sps"] = f"{sps:,.0f}"
        if self.recent_returns:
            post["return"] = f"{sum(self.recent_returns) / len(self.recent_returns):.1f}"
        for k, v in fields.items():
            post[k] = f"{v:.1f}" if isinstance(v, float) and math.isfinite(v) else v
        self._bar.set_postfix(post, refresh=False)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        """Flush TensorBoard files and close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
