"""Atomic, checksummed checkpoints of everything a run needs to resume.

A checkpoint file is a short header (magic line + SHA-256 of the body) followed by
a ``torch.save`` body of tensors and plain containers only, read back with
``torch.load(weights_only=True)``. Files are written to a temporary name, fsynced
and renamed into place, so a process killed mid-write leaves the previous good
checkpoint untouched; a truncated or corrupt file fails its checksum, is skipped
with a warning naming it, and the newest good one is used instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

MAGIC = b"LIFELONG-CHECKPOINT v1\n"
_NAME = re.compile(r"^step_(\d{12})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: truncated, corrupt, or not a lifelong checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename); return the path."""
    path = Path(path)
    _check_plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(digest + b"\n")
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint; raise ``CheckpointError`` naming the file if it is bad."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a lifelong checkpoint (bad header)")
    header_end = len(MAGIC) + 65
    digest, body = data[len(MAGIC) : header_end - 1], data[header_end:]
    if len(data) < header_end or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupt file)")
    try:
        return torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # a body that hashes right but does not unpickle is still unusable
        raise CheckpointError(f"{path}: cannot be loaded ({e})") from e


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken at env step ``step``."""
    return f"step_{step:012d}.pt"


class CheckpointDir:
    """The ``checkpoints/`` folder of a run: numbered files, newest good one wins."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (temporary files of interrupted writes excluded)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Write the checkpoint for ``step`` and prune the oldest beyond ``keep``."""
        path = save_checkpoint(self.root / checkpoint_name(step), payload)
        for stale in self.root.glob(".step_*.tmp-*"):
            if stale.name != path.name:
                stale.unlink(missing_ok=True)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies, warning about each bad one skipped; None if none."""
        for path in reversed(self.paths()):
            try:
                return path, load_checkpoint(path, map_location)
            except CheckpointError as e:
                warnings.warn(f"skipping bad checkpoint {e}", stacklevel=2)
        return None


_PLAIN = (torch.Tensor, int, float, str, bool, bytes, type(None))


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything but tensors and plain containers, which weights_only loading could not read."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: key {key!r} of type {type(key).__name__} is not allowed")
            _check_plain(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise CheckpointError(
            f"{where}: {type(obj).__name__} is not allowed in a checkpoint (allowed: tensors, numbers, "
            "strings, None and dicts/lists/tuples of them)"
        )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
