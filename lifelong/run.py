"""A run: its directory, seeding, device, logger, evaluations, checkpoints and results.

Trainers own their learning loop and call ``Run.tick`` after each iteration; the
run decides when to log, evaluate, checkpoint and stop. Everything needed to
continue (trainer state, RNG states, step, wall time, evaluation history) goes
into one checkpoint, so ``lifelong train --resume DIR`` continues exactly there.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lifelong.allocator import keep_freed_memory
from lifelong.checkpoint import CheckpointDir, load_checkpoint
from lifelong.config import Config, ConfigError, apply_override, config_from_dict, dump_yaml, parse_override, read_yaml, to_dict
from lifelong.logger import Logger
from lifelong.registry import AGENTS

if TYPE_CHECKING:
    from lifelong.agents.base import Trainer


class DivergedError(RuntimeError):
    """A loss or parameter became NaN or inf; the run stops without checkpointing."""


class RunDirError(RuntimeError):
    """A run directory that is missing, incomplete, or already holds a run."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``run.device``, with a one-line error if it is not available here."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"run.device: {name!r} is not a torch device (allowed: cpu, cuda, cuda:N, mps)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {name!r} is not available on this machine (no CUDA device); use run.device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"run.device: {name!r} is not available on this machine; use run.device=cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain containers."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_to_plain(o) for o in obj]
    return obj


def _to_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_to_tuple(o) for o in obj)
    return obj


def check_finite(state: Any, where: str = "") -> str | None:
    """The path of the first floating tensor in ``state`` holding NaN or inf, or None."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return None if bool(torch.isfinite(state).all()) else where or "tensor"
        return None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        bad = check_finite(value, f"{where}.{key}" if where else str(key))
        if bad:
            return bad
    return None


@dataclass
class EvalRecord:
    """One evaluation: env step, mean and std of the return, episodes, training wall time then."""

    step: int
    mean: float
    std: float
    episodes: int
    wall_time_s: float = 0.0


@dataclass
class Run:
    """The live state of one training run (see module docstring)."""

    cfg: Config
    dir: Path
    device: torch.device
    step: int = 0
    wall_time: float = 0.0
    evals: list[EvalRecord] = field(default_factory=list)
    curriculum_tests: list[dict[str, Any]] = field(default_factory=list)  # test-set results of a curriculum run
    logger: Logger | None = None
    checkpoints: CheckpointDir | None = None
    resumed_from: Path | None = None
    env_seed: int = 0
    resumes: int = 0
    created_dir: bool = False
    eval_time: float = 0.0
    setup_time: float = 0.0
    until: int | None = None  # stop this invocation at this step (PBT segments); not part of the config
    _start: float = field(default_factory=time.perf_counter)
    _next_log: int = 0
    _next_eval: int = 0
    _next_checkpoint: int = 0
    _stop: bool = False
    _eval_env: Any = None
    _summary: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- creation
    @classmethod
    def create(cls, cfg: Config, run_dir: str | Path | None = None, *, logger: bool = True) -> "Run":
        """Start a new run in ``run_dir`` (default ``runs/<run.name>``); refuse a dir holding a run."""
        device = resolve_device(cfg.run.device)
        path = Path(run_dir) if run_dir is not None else Path("runs") / cfg.run.name
        if (path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()):
            raise RunDirError(
                f"run dir {str(path)!r} already holds a run; continue it with `lifelong train --resume {path}` "
                "or choose another with --run-dir or run.name=..."
            )
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(dump_yaml(cfg))
        seed_everything(cfg.run.seed)
        run = cls(cfg=cfg, dir=path, device=device, env_seed=cfg.run.seed, created_dir=created)
        run._open(logger)
        return run

    @classmethod
    def load_config(cls, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """The resolved config saved in ``run_dir``, with ``key=value`` overrides applied."""
        path = Path(run_dir)
        if not path.is_dir():
            raise RunDirError(f"run dir {str(path)!r} not found; start a run with `lifelong train CONFIG`")
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"run dir {str(path)!r} has no config.yaml; is it a lifelong run dir?")
        raw = read_yaml(path / "config.yaml")
        for text in overrides:
            apply_override(raw, *parse_override(text))
        return config_from_dict(raw)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), *, logger: bool = True) -> tuple["Run", dict[str, Any]]:
        """Reopen ``run_dir`` at its newest good checkpoint; return the run and the checkpoint payload."""
        path = Path(run_dir)
        cfg = cls.load_config(path, overrides)
        device = resolve_device(cfg.run.device)
        ckpt_dir = CheckpointDir(path / "checkpoints", keep=cfg.run.keep_checkpoints)
        found = ckpt_dir.latest(map_location=device)
        if found is None:
            raise RunDirError(f"run dir {str(path)!r} has no usable checkpoint to resume from")
        ckpt_path, payload = found
        if overrides:
            (path / "config.yaml").write_text(dump_yaml(cfg))
        run = cls(cfg=cfg, dir=path, device=device, resumed_from=ckpt_path)
        run.step = int(payload["step"])
        run.wall_time = float(payload.get("wall_time", 0.0))
        run.eval_time = float(payload.get("eval_time", 0.0))
        run.evals = [EvalRecord(**e) for e in payload.get("evals", [])]
        run.curriculum_tests = list(payload.get("curriculum_tests", []))
        # Fresh episodes after a resume must not replay the ones at the start of the run.
        run.env_seed = cfg.run.seed + 7919 * (int(payload.get("resumes", 0)) + 1)
        run.resumes = int(payload.get("resumes", 0)) + 1
        set_rng_state(payload["rng"])
        run._open(logger)
        return run, payload

    def _open(self, logger: bool) -> None:
        self.checkpoints = CheckpointDir(self.dir / "checkpoints", keep=self.cfg.run.keep_checkpoints)
        self.logger = Logger(
            self.dir,
            total_steps=self.cfg.run.total_steps,
            start_step=self.step,
            progress=self.cfg.run.progress and logger,
            tensorboard=logger,
        )
        run = self.cfg.run
        self._next_log = self.step + run.log_every
        self._next_eval = _next_multiple(self.step, run.eval_every)
        self._next_checkpoint = _next_multiple(self.step, run.checkpoint_every)
        self._start = time.perf_counter()

    # --------------------------------------------------------------- the loop
    @property
    def done(self) -> bool:
        """True once the step budget (or this invocation's ``until``) is spent, or an early stop triggered."""
        if self.until is not None and self.step >= self.until:
            return True
        return self._stop or self.step >= self.cfg.run.total_steps

    def tick(self, trainer: "Trainer", metrics: dict[str, float] | None = None) -> bool:
        """Called by a trainer after each iteration: log, evaluate, checkpoint when due. True: stop."""
        run = self.cfg.run
        if metrics:
            for name, value in metrics.items():
                if not math.isfinite(value):
                    raise DivergedError(
                        f"step {self.step}: {name} is {value}; stopped without checkpointing "
                        f"(last good checkpoint kept in {self.dir / 'checkpoints'})"
                    )
        if self.step >= self._next_log or self.done:
            self.logger.flush(self.step, metrics)
            self._next_log = self.step + run.log_every
        if run.eval_every and self.step >= self._next_eval and not self.done:
            self.evaluate(trainer)
            self._next_eval = _next_multiple(self.step, run.eval_every)
        if run.checkpoint_every and self.step >= self._next_checkpoint and not self.done:
            self.save(trainer)
            self._next_checkpoint = _next_multiple(self.step, run.checkpoint_every)
        return self.done

    def evaluate(self, trainer: "Trainer") -> EvalRecord:
        """Evaluate the trainer's policy now and log ``eval/return``."""
        from lifelong.evaluation import evaluate_policy

        run = self.cfg.run
        started = time.perf_counter()
        result, self._eval_env = evaluate_policy(
            trainer.agent,
            self.cfg,
            episodes=run.eval_episodes,
            device=self.device,
            env_state=trainer.env_state(),
            deterministic=run.eval_deterministic,
            env=self._eval_env,
        )
        self.eval_time += time.perf_counter() - started
        record = EvalRecord(self.step, result["mean"], result["std"], result["episodes"], round(self.elapsed(), 3))
        self.evals.append(record)
        self.logger.scalars({"eval/return": record.mean, "eval/return_std": record.std}, self.step)
        self.logger.progress(self.step, eval=record.mean)
        if self.cfg.curriculum is not None:
            self._test_curriculum(trainer)
        if run.stop_return is not None and record.mean >= run.stop_return:
            self.logger.write(f"step {self.step}: eval return {record.mean:.1f} >= run.stop_return; stopping")
            self._stop = True
        return record

    def _test_curriculum(self, trainer: "Trainer") -> None:
        """One episode per task of the curriculum's test set: ``curriculum/test_return`` and ``curriculum/mastered``."""
        from lifelong.curricula.env import evaluate_test_set

        started = time.perf_counter()
        test = evaluate_test_set(trainer.agent, self.cfg, self.device, env_state=trainer.env_state(),
                                 deterministic=self.cfg.run.eval_deterministic)
        self.eval_time += time.perf_counter() - started
        if test is None:
            return
        entry = {"step": self.step, "mean": test["mean"], "mastered": test["mastered"], "returns": test["returns"]}
        self.curriculum_tests.append(entry)
        values = {"curriculum/test_return": test["mean"]}
        if test["mastered"] is not None:
            values["curriculum/mastered"] = 100.0 * test["mastered"]
        self.logger.scalars(values, self.step)

    def payload(self, trainer: "Trainer") -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers."""
        return {
            "format": 1,
            "step": self.step,
            "wall_time": self.elapsed(),
            "eval_time": self.eval_time,
            "resumes": self.resumes,
            "evals": [vars(e) for e in self.evals],
            "curriculum_tests": self.curriculum_tests,
            "config": to_dict(self.cfg),
            "rng": rng_state(),
            "trainer": trainer.state_dict(),
        }

    def save(self, trainer: "Trainer") -> Path:
        """Checkpoint now, unless some tensor is NaN or inf (then raise, keeping the last good one)."""
        payload = self.payload(trainer)
        bad = check_finite(payload["trainer"], "trainer")
        if bad:
            raise DivergedError(
                f"step {self.step}: {bad} holds NaN or inf; not checkpointing "
                f"(last good checkpoint kept in {self.dir / 'checkpoints'})"
            )
        return self.checkpoints.save(self.step, payload)

    def elapsed(self) -> float:
        """Wall-clock seconds of training, summed over resumes."""
        return self.wall_time + time.perf_counter() - self._start

    def summarize(self, **figures: Any) -> None:
        """Add experiment-specific summary figures to results.json."""
        self._summary.update(figures)

    def finish(self, trainer: "Trainer") -> dict[str, Any]:
        """Final evaluation, final checkpoint and results.json; close the logger."""
        self.logger.flush(self.step)
        if not self.evals or self.evals[-1].step != self.step:
            self.evaluate(trainer)
        self.save(trainer)
        results = self.results()
        write_json(self.dir / "results.json", results)
        self.close()
        return results

    def results(self) -> dict[str, Any]:
        """The content of results.json."""
        final = self.evals[-1] if self.evals else None
        best = max(self.evals, key=lambda e: e.mean) if self.evals else None
        return {
            "name": self.cfg.run.name,
            "agent": self.cfg.agent.name,
            "env": self.cfg.env.id,
            "steps": self.step,
            "wall_time_s": round(self.elapsed(), 3),
            "eval_time_s": round(self.eval_time, 3),
            "setup_time_s": round(self.setup_time, 3),
            "final_eval": vars(final) if final else None,
            "best_eval": vars(best) if best else None,
            "evals": [vars(e) for e in self.evals],
            **({"curriculum_tests": self.curriculum_tests} if self.cfg.curriculum is not None else {}),
            "summary": self._summary,
        }

    def close(self) -> None:
        """Close the logger and the evaluation env."""
        if self.logger is not None:
            self.logger.close()
        if self._eval_env is not None:
            self._eval_env.close()
            self._eval_env = None


def _next_multiple(step: int, every: int) -> int:
    if every <= 0:
        return sys.maxsize
    return (step // every + 1) * every


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def make_trainer(cfg: Config, run: Run) -> "Trainer":
    """Build the trainer named by ``agent.name``."""
    return AGENTS.get(cfg.agent.name, "agent.name").factory(cfg, run)


def load_trainer(target: str | Path) -> tuple["Trainer", Path, dict[str, Any]]:
    """The trainer of a run dir's newest usable checkpoint, or of a checkpoint file, with its path and payload.

    For evaluation and inspection: the trainer logs to the console only (nothing goes to
    TensorBoard) and runs on the checkpoint config's ``run.device``.
    """
    target = Path(target)
    if target.is_dir():
        cfg = Run.load_config(target)
        found = CheckpointDir(target / "checkpoints").latest()
        if found is None:
            raise RunDirError(f"run dir {str(target)!r} has no usable checkpoint to evaluate")
        ckpt_path, payload = found
    elif target.is_file():
        ckpt_path, payload = target, load_checkpoint(target)
        cfg = config_from_dict(payload["config"])
    else:
        raise RunDirError(f"{str(target)!r} is neither a run dir nor a checkpoint file")
    cfg.run.progress = False
    quiet = Logger(ckpt_path.parent, total_steps=cfg.run.total_steps, progress=False, tensorboard=False)
    run = Run(cfg=cfg, dir=ckpt_path.parent, device=resolve_device(cfg.run.device), logger=quiet)
    trainer = make_trainer(cfg, run)
    trainer.load_state_dict(payload["trainer"])
    return trainer, ckpt_path, payload


def train(cfg: Config | None = None, run_dir: str | Path | None = None, *, resume: str | Path | None = None,
          overrides: list[str] | tuple[str, ...] = (), until: int | None = None) -> dict[str, Any]:
    """Train a new run from ``cfg`` (or continue the run in ``resume``); return results.json's content.

    ``until`` stops this invocation at that env step (a PBT segment) with the usual final
    evaluation and checkpoint; the run's own budget stays ``run.total_steps``.
    """
    if resume is not None:
        run, payload = Run.resume(resume, overrides)
    else:
        if cfg is None:
            raise ValueError("train: give a config or a run dir to resume")
        run, payload = Run.create(cfg, run_dir), None
    run.until = until
    try:
        if run.cfg.run.torch_threads:
            torch.set_num_threads(run.cfg.run.torch_threads)
        if run.cfg.run.keep_freed_memory:
            keep_freed_memory()
        try:
            trainer = make_trainer(run.cfg, run)
        except BaseException:
            # Nothing was trained: leave no half-made run dir behind (only one this call created).
            run.close()
            if run.created_dir and not run.checkpoints.paths():
                shutil.rmtree(run.dir, ignore_errors=True)
            raise
        if payload is not None:
            trainer.load_state_dict(payload["trainer"])
            run.logger.write(f"resumed {run.dir} from {run.resumed_from.name} at step {run.step}")
        else:
            run.logger.write(f"run dir: {run.dir}  (TensorBoard: tensorboard --logdir {run.dir})")
        run.setup_time = time.perf_counter() - run._start  # building nets and envs, first imports
        trainer.train()
        return run.finish(trainer)
    except BaseException:
        run.close()
        raise
