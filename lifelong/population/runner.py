"""A PBT population: members, their segments on a backend, the controller's decisions, the record.

The population dir holds ``config.yaml`` (the resolved config), ``members/m<i>/`` (one
ordinary run dir per member, with its own TensorBoard curves and checkpoints),
``population.pt`` (controller RNG and every member's state, written atomically after
each decision round), TensorBoard files of the population (``pbt/*``: best and mean
score, each member's score and hyperparameters, exploit events) and ``results.json``.
``lifelong pbt --resume DIR`` reloads ``population.pt`` and carries on.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from lifelong.checkpoint import load_checkpoint, save_checkpoint
from lifelong.config import Config, build, config_from_dict, dump_yaml, read_yaml, to_dict
from lifelong.population.backends import make_backend
from lifelong.population.controller import Decision, MemberState, PBTController
from lifelong.population.tasks import MemberTask, RLTask, SegmentResult
from lifelong.run import RunDirError, write_json

STATE_FILE = "population.pt"


class Population:
    """Runs a population to ``run.total_steps`` per member (see module docstring)."""

    def __init__(self, cfg: Config, root: str | Path, task: MemberTask | None = None, *,
                 backend: Any = None, log: bool = True) -> None:
        if cfg.pbt is None:
            raise RunDirError("lifelong pbt needs a `pbt:` section in the config (see configs/pbt_ppo_cartpole.yaml)")
        self.cfg = cfg
        self.pbt = cfg.pbt
        self.root = Path(root)
        self.task = task if task is not None else RLTask(to_dict(cfg))
        self.controller = PBTController(self.pbt)
        self.members: list[MemberState] = []
        self.rounds = 0
        self.events: list[dict[str, Any]] = []
        self._backend = backend
        self._log = log
        self._writer = None
        self._started = time.perf_counter()
        self.controller_seconds = 0.0

    # ----------------------------------------------------------------- setup
    @classmethod
    def create(cls, cfg: Config, root: str | Path, task: MemberTask | None = None, **kwargs: Any) -> "Population":
        """A new population in ``root``; refuses a dir that already holds one."""
        root = Path(root)
        if (root / STATE_FILE).exists():
            raise RunDirError(f"{root} already holds a population; continue it with `lifelong pbt --resume {root}`")
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yaml").write_text(dump_yaml(cfg))
        pop = cls(cfg, root, task, **kwargs)
        base = {key: _get(to_dict(cfg), key) for key in pop.controller.priors} if pop.pbt.initial == "config" else {}
        pop.members = [MemberState(i, hp) for i, hp in enumerate(pop.controller.initial_hparams(base))]
        pop.save()
        return pop

    @classmethod
    def resume(cls, root: str | Path, task: MemberTask | None = None, **kwargs: Any) -> "Population":
        """Reopen the population in ``root`` where its last decision round left it."""
        root = Path(root)
        if not (root / STATE_FILE).is_file():
            raise RunDirError(f"{root} holds no population ({STATE_FILE} missing); start one with `lifelong pbt CONFIG`")
        raw = read_yaml(root / "config.yaml")
        # Toy tasks mutate keys of their own; only RL members' hyperparameters must be config keys.
        cfg = config_from_dict(raw) if task is None else build(Config, raw)
        state = load_checkpoint(root / STATE_FILE)
        pop = cls(cfg, root, task, **kwargs)
        pop.members = [MemberState.from_dict(m) for m in state["members"]]
        pop.controller.load_state_dict(state["controller"])
        pop.rounds = int(state["rounds"])
        pop.events = list(state["events"])
        pop.controller_seconds = float(state.get("controller_seconds", 0.0))
        return pop

    def member_dir(self, member: MemberState) -> str:
        """Absolute run dir of a member (under ``pbt.storage`` when set)."""
        base = Path(self.pbt.storage) / self.root.name if self.pbt.storage else self.root
        return str((base / "members" / f"m{member.id}").resolve())

    def save(self) -> None:
        """Write the controller and member states atomically."""
        save_checkpoint(self.root / STATE_FILE, {
            "members": [m.to_dict() for m in self.members],
            "controller": self.controller.state_dict(),
            "rounds": self.rounds,
            "events": self.events,
            "controller_seconds": self.controller_seconds,
        })

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        """Train every member to ``run.total_steps``; return results.json's content."""
        backend = self._backend or make_backend(self.pbt.backend, self.pbt.workers, self.pbt.address)
        try:
            if self.pbt.synchronous:
                self._run_synchronous(backend)
            else:
                self._run_asynchronous(backend)
        finally:
            if self._backend is None:
                backend.close()
            if self._writer is not None:
                self._writer.close()
        results = self.results()
        write_json(self.root / "results.json", results)
        return results

    def _target(self, member: MemberState) -> int:
        return min(member.step + self.pbt.ready_steps, self.cfg.run.total_steps)

    def _unfinished(self) -> list[MemberState]:
        return [m for m in self.members if m.step < self.cfg.run.total_steps]

    def _submit(self, backend: Any, member: MemberState) -> Future:
        return backend.submit(self.task, self.member_dir(member), member.id, member.hparams, self._target(member))

    def _run_synchronous(self, backend: Any) -> None:
        while self._unfinished():
            todo = {m.id: m for m in self._unfinished()}
            while todo:
                futures = {self._submit(backend, m): m for m in todo.values()}
                lost = self._collect(backend, futures, wait_all=True)
                todo = {m.id: m for m in lost}
            if self._unfinished():  # a decision after the last segment would never be trained on
                self._decide_and_apply(None)
            else:
                self._report([])

    def _run_asynchronous(self, backend: Any) -> None:
        running = {self._submit(backend, m): m for m in self._unfinished()}
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            finished = {f: running.pop(f) for f in done}
            lost = self._collect(backend, finished, wait_all=False)
            if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool) for f in finished):
                # Every segment in flight died with the pool: rerun them too.
                lost += list(running.values())
                running.clear()
            lost_ids = {m.id for m in lost}
            for member in finished.values():
                if member.id not in lost_ids and member.step < self.cfg.run.total_steps:
                    self._decide_and_apply([member.id])
            for member in {m.id: m for m in list(finished.values()) + lost}.values():
                if member.step < self.cfg.run.total_steps:
                    running[self._submit(backend, member)] = member

    def _collect(self, backend: Any, futures: dict[Future, MemberState], wait_all: bool) -> list[MemberState]:
        """Record finished segments; return the members whose segment was lost (to run again)."""
        if wait_all:
            wait(list(futures))
        lost: list[MemberState] = []
        broken = False
        for future, member in futures.items():
            error = CancelledError("segment cancelled") if future.cancelled() else future.exception()
            if error is None:
                self._record(member, future.result())
                continue
            broken |= isinstance(error, BrokenProcessPool)
            member.restarts += 1
            self._event({"kind": "restart", "member": member.id, "step": member.step,
                         "error": f"{type(error).__name__}: {error}".splitlines()[0][:300]})
            if member.restarts > self.pbt.max_restarts:
                raise RuntimeError(
                    f"member {member.id} failed {member.restarts} times (pbt.max_restarts={self.pbt.max_restarts}); "
                    f"last error: {type(error).__name__}: {error}"
                ) from error
            lost.append(member)
        if broken:
            backend.restart()
        return lost

    def _record(self, member: MemberState, result: SegmentResult) -> None:
        member.step = result.step
        member.scores.append((result.step, result.score))
        member.checkpoint = result.checkpoint
        self.events.append({"kind": "segment", "member": member.id, "step": result.step, "score": result.score,
                            "seconds": round(result.seconds, 4),
                            "wall_time_s": round(time.perf_counter() - self._started, 4)})
        writer = self._tensorboard()
        if writer is not None:
            writer.add_scalar(f"pbt/score/m{member.id}", result.score, result.step)
            for key, value in member.hparams.items():
                writer.add_scalar(f"pbt/hparams/m{member.id}/{key}", float(value), result.step)

    def _decide_and_apply(self, candidates: list[int] | None) -> list[Decision]:
        started = time.perf_counter()
        decisions = self.controller.decide(self.members, candidates)
        by_id = {m.id: m for m in self.members}
        for d in decisions:
            member, donor = by_id[d.member], by_id[d.donor]
            member.checkpoint = self.task.transplant(self.member_dir(donor), self.member_dir(member))
            member.hparams = dict(d.hparams)
            member.lineage.append({"step": d.step, "donor": d.donor, "from": d.previous, "to": d.hparams})
            self._event({"kind": "exploit", "member": d.member, "donor": d.donor, "step": d.step,
                         "hparams": d.hparams, "donor_hparams": dict(donor.hparams)})
        self.rounds += 1
        self.controller_seconds += time.perf_counter() - started
        self.save()
        self._report(decisions)
        return decisions

    # ----------------------------------------------------------------- record
    def _event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        writer = self._tensorboard()
        if writer is not None:
            writer.add_text("pbt/events", str(event), int(event.get("step", 0)))

    def _tensorboard(self) -> Any:
        if not self._log:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.root))
        return self._writer

    def best(self) -> MemberState:
        """The member with the highest current score."""
        window = self.pbt.score_window
        return max(self.members, key=lambda m: (m.score(window) if m.scores else float("-inf"), -m.id))

    def _report(self, decisions: list[Decision]) -> None:
        window = self.pbt.score_window
        scores = [m.score(window) for m in self.members if m.scores]
        step = max(m.step for m in self.members)
        writer = self._tensorboard()
        if writer is not None and scores:
            writer.add_scalar("pbt/best_score", max(scores), step)
            writer.add_scalar("pbt/mean_score", sum(scores) / len(scores), step)
            writer.add_scalar("pbt/exploits", sum(e["kind"] == "exploit" for e in self.events), step)
            writer.add_scalar("pbt/restarts", sum(e["kind"] == "restart" for e in self.events), step)
            writer.flush()
        if not self._log:
            return
        print(self.table(decisions), file=sys.stderr, flush=True)

    def table(self, decisions: list[Decision] = ()) -> str:
        """The terminal view: member, step, score, hyperparameters, lineage."""
        window = self.pbt.score_window
        keys = list(self.controller.priors)
        exploited = {d.member: d.donor for d in decisions}
        head = f"round {self.rounds}  " + "  ".join(f"{k}" for k in keys)
        lines = [head, f"{'member':<8}{'step':>10}{'score':>10}  " + "".join(f"{k.split('.')[-1]:>12}" for k in keys)
                 + "  lineage"]
        for m in self.members:
            score = m.score(window)
            lineage = " ".join(f"<-m{e['donor']}@{e['step']}" for e in m.lineage[-3:])
            mark = f"  (copied m{exploited[m.id]})" if m.id in exploited else ""
            lines.append(f"m{m.id:<7}{m.step:>10}{(f'{score:.2f}' if score is not None else '-'):>10}  "
                         + "".join(f"{_fmt(m.hparams[k]):>12}" for k in keys) + f"  {lineage}{mark}")
        return "\n".join(lines)

    def results(self) -> dict[str, Any]:
        """results.json: the best member, every member's record, events and timing."""
        best = self.best()
        return {
            "best_member": best.id,
            "best_score": best.score(self.pbt.score_window),
            "best_hparams": best.hparams,
            "members": [m.to_dict() for m in self.members],
            "events": self.events,
            "rounds": self.rounds,
            "controller_seconds": round(self.controller_seconds, 4),
            "wall_time_s": round(time.perf_counter() - self._started, 3),
        }


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node


def _fmt(value: float) -> str:
    return f"{value:d}" if isinstance(value, int) else f"{value:.3g}"
