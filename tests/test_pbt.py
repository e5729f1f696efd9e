"""PBT: controller rules, the paper's toy, exploit semantics for RL members, restarts and resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from lifelong.config import Config, ConfigError, PBTConfig, RunConfig, load_config
from lifelong.population import MemberState, PBTController, Population
from lifelong.population.backends import InlineBackend, LocalBackend
from lifelong.population.toys import NoisyQuadraticTask, PaperToyTask
from pbt_tasks import QuadraticDiesOnceTask

ROOT = Path(__file__).resolve().parent.parent


def pbt(**kw) -> PBTConfig:
    base = dict(population=4, ready_steps=10, hyperparams={"lr": {"low": 1e-3, "high": 1.0}})
    base.update(kw)
    return PBTConfig(**base)


def members(scores, checkpoints=True, step=10):
    return [MemberState(i, {"lr": 0.1}, step=step, scores=[(step, s)], checkpoint="c" if checkpoints else None)
            for i, s in enumerate(scores)]


# ------------------------------------------------------------------- controller


def test_bottom_quantile_copies_from_top_quantile():
    ctl = PBTController(pbt(population=8, quantile=0.25))
    ms = members([5, 1, 7, 2, 8, 3, 6, 4])
    decisions = ctl.decide(ms)
    assert sorted(d.member for d in decisions) == [1, 3]  # the two lowest scores
    assert all(d.donor in (2, 4) for d in decisions)  # the two highest
    assert all(m.last_decision_step == 10 for m in ms)


def test_not_ready_burn_in_gap_and_missing_checkpoint_block_exploit():
    ms = members([1, 9], step=10)
    assert PBTController(pbt(ready_steps=11, quantile=0.5)).decide(ms) == []
    assert PBTController(pbt(burn_in_steps=20, quantile=0.5)).decide(members([1, 9])) == []
    assert PBTController(pbt(min_score_gap=8.5, quantile=0.5)).decide(members([1, 9])) == []
    assert PBTController(pbt(quantile=0.5)).decide(members([1, 9], checkpoints=False)) == []
    assert len(PBTController(pbt(quantile=0.5)).decide(members([1, 9]))) == 1


def test_explore_perturbs_in_log_space_clamps_and_rounds():
    cfg = pbt(perturb_factors=[2.0], resample_probability=0.0,
              hyperparams={"lr": {"low": 1e-3, "high": 0.5}, "epochs": {"low": 1, "high": 10, "scale": "linear",
                                                                          "integer": True}})
    ctl = PBTController(cfg)
    out = ctl.explore({"lr": 0.01, "epochs": 3})
    assert out["lr"] == pytest.approx(0.02)
    assert out["epochs"] == 6 and isinstance(out["epochs"], int)
    out = ctl.explore({"lr": 0.4, "epochs": 7})
    assert out["lr"] == 0.5 and out["epochs"] == 10  # clamped to the bounds
    ctl = PBTController(pbt(perturb_factors=[1.25], resample_probability=0.0,
                            hyperparams={"n": {"low": 1, "high": 100, "scale": "linear", "integer": True}}))
    assert ctl.explore({"n": 3})["n"] == 4  # 3.75 rounds to 4, never truncates to 3


def test_resampling_stays_in_bounds_and_is_seeded():
    cfg = pbt(resample_probability=1.0, hyperparams={"lr": {"low": 1e-4, "high": 1e-1}})
    a, b = PBTController(cfg), PBTController(cfg)
    draws = [a.explore({"lr": 1.0})["lr"] for _ in range(500)]
    assert draws == [b.explore({"lr": 1.0})["lr"] for _ in range(500)]
    assert 1e-4 <= min(draws) and max(draws) <= 1e-1
    logs = torch.tensor(draws).log10()
    assert abs(float((logs < -2.5).float().mean()) - 0.5) < 0.08  # log-uniform: half below the log midpoint


def test_controller_state_round_trip_reproduces_decisions():
    ctl = PBTController(pbt(population=4, quantile=0.5))
    ctl.decide(members([1, 2, 3, 4]))
    saved = ctl.state_dict()
    first = ctl.decide(members([4, 3, 2, 1], step=20))
    other = PBTController(pbt(population=4, quantile=0.5))
    other.load_state_dict(saved)
    assert other.decide(members([4, 3, 2, 1], step=20)) == first


def test_hyperparam_keys_are_checked_against_the_config():
    with pytest.raises(ConfigError, match="pbt.hyperparams.agent.lrr: not a numeric config key"):
        load_config(ROOT / "configs/pbt_ppo_cartpole.yaml", ["pbt.hyperparams={agent.lrr: {low: 1e-4, high: 1}}"])
    with pytest.raises(ConfigError, match="not allowed on a log scale"):
        load_config(ROOT / "configs/pbt_ppo_cartpole.yaml", ["pbt.hyperparams={agent.lr: {low: 0, high: 1}}"])


# ----------------------------------------------------------------- paper's toy


def toy_config(total: int, **kw) -> Config:
    cfg = pbt(population=2, ready_steps=4, quantile=0.5, resample_probability=0.25, seed=kw.pop("seed", 0),
              hyperparams={"h0": {"low": 0.0, "high": 1.0, "scale": "linear"},
                           "h1": {"low": 0.0, "high": 1.0, "scale": "linear"}}, **kw)
    return Config(run=RunConfig(total_steps=total), pbt=cfg)


def toy_population(root: Path, total: int = 200, **kw) -> Population:
    pop = Population.create(toy_config(total, **kw), root, PaperToyTask(), backend=InlineBackend(), log=False)
    pop.members[0].hparams = {"h0": 1.0, "h1": 0.0}
    pop.members[1].hparams = {"h0": 0.0, "h1": 1.0}
    return pop


def test_paper_toy_pbt_reaches_the_optimum_fixed_pair_does_not(tmp_path):
    results = toy_population(tmp_path / "pbt").run()
    assert results["best_score"] > 1.15  # the paper: about 1.2
    assert any(e["kind"] == "exploit" for e in results["events"])
    fixed = PaperToyTask()
    scores = [fixed.run_segment(str(tmp_path / f"fixed{i}"), i, hp, 200).score
              for i, hp in enumerate([{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}])]
    assert max(scores) == pytest.approx(0.39, abs=0.02)  # the paper: about 0.39


class InterruptingBackend(InlineBackend):
    """Dies like a killed controller after ``limit`` segments."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def submit(self, *args, **kwargs):
        if self.limit == 0:
            raise KeyboardInterrupt("controller killed")
        self.limit -= 1
        return super().submit(*args, **kwargs)


def test_resume_after_controller_death_matches_an_uninterrupted_run(tmp_path):
    reference = toy_population(tmp_path / "ref", total=40).run()
    pop = toy_population(tmp_path / "cut", total=40)
    pop._backend = InterruptingBackend(limit=9)  # dies inside the fifth round
    with pytest.raises(KeyboardInterrupt):
        pop.run()
    resumed = Population.resume(tmp_path / "cut", PaperToyTask(), backend=InlineBackend(), log=False).run()
    assert [m["hparams"] for m in resumed["members"]] == [m["hparams"] for m in reference["members"]]
    assert [m["scores"][-1] for m in resumed["members"]] == [m["scores"][-1] for m in reference["members"]]


# --------------------------------------------------------- noisy quadratic, local


def quadratic_config(total: int, population: int = 4, exploit: bool = True) -> Config:
    cfg = pbt(population=population, ready_steps=20, quantile=0.25 if exploit else 0.5,
              min_score_gap=0.0 if exploit else 1e30, hyperparams={"lr": {"low": 1e-3, "high": 1.0}})
    return Config(run=RunConfig(total_steps=total), pbt=cfg)


def test_local_backend_population_beats_fixed_population_on_noisy_quadratic(tmp_path):
    task = NoisyQuadraticTask(seed=3)
    backend = LocalBackend(workers=2)
    try:
        pbt_results = Population.create(quadratic_config(400), tmp_path / "pbt", task, backend=backend,
                                        log=False).run()
    finally:
        backend.close()
    fixed = Population.create(quadratic_config(400, exploit=False), tmp_path / "fixed", task,
                              backend=InlineBackend(), log=False).run()
    assert not any(e["kind"] == "exploit" for e in fixed["events"])
    assert any(e["kind"] == "exploit" for e in pbt_results["events"])
    # same controller seed, so both start from the same learning rates: only exploit/explore differs
    assert pbt_results["best_score"] > fixed["best_score"]


# ------------------------------------------------------------------ RL members


def test_rl_exploit_copies_weights_and_trains_with_the_mutated_lr(tmp_path):
    cfg = load_config(ROOT / "configs/pbt_ppo_cartpole.yaml", [
        "run.total_steps=1024", "run.eval_episodes=2", "run.eval_num_envs=2", "pbt.population=2",
        "pbt.ready_steps=512", "pbt.quantile=0.5", "pbt.resample_probability=0", "pbt.perturb_factors=[2.0]",
        "pbt.hyperparams={agent.lr: {low: 1.0e-5, high: 1.0}}"])
    pop = Population.create(cfg, tmp_path, backend=InlineBackend(), log=False)
    results = pop.run()
    exploits = [e for e in results["events"] if e["kind"] == "exploit"]
    assert exploits, results
    assert len(exploits) == 1 and exploits[0]["step"] == 512  # no decision after the last segment
    member = pop.members[exploits[0]["member"]]
    assert member.hparams["agent.lr"] == pytest.approx(2.0 * exploits[0]["donor_hparams"]["agent.lr"])
    from lifelong.run import Run, make_trainer

    run, payload = Run.resume(pop.member_dir(member), logger=False)
    assert run.cfg.agent.lr == pytest.approx(member.hparams["agent.lr"])
    trainer = make_trainer(run.cfg, run)
    trainer.load_state_dict(payload["trainer"])
    # loading the copied optimizer state must not bring back the donor's learning rate
    assert trainer.optimizer.lr == pytest.approx(member.hparams["agent.lr"])
    run.close()
    assert (Path(pop.member_dir(member)) / "results.json").is_file()

    # transplant: the donor's trainer state, the member's own step, RNG streams and evaluation history
    from lifelong.checkpoint import CheckpointDir

    donor_dir, member_dir = pop.member_dir(pop.members[exploits[0]["donor"]]), pop.member_dir(member)
    _, before = CheckpointDir(Path(member_dir) / "checkpoints").latest()
    _, donor = CheckpointDir(Path(donor_dir) / "checkpoints").latest()
    pop.task.transplant(donor_dir, member_dir)
    _, after = CheckpointDir(Path(member_dir) / "checkpoints").latest()
    for key, value in donor["trainer"]["agent"].items():
        torch.testing.assert_close(after["trainer"]["agent"][key], value)
    torch.testing.assert_close(after["trainer"]["optimizer"]["exp_avg"], donor["trainer"]["optimizer"]["exp_avg"])
    assert after["step"] == before["step"] and after["evals"] == before["evals"]
    assert torch.equal(after["rng"]["torch"], before["rng"]["torch"])


@pytest.mark.parametrize("synchronous", [True, False])
def test_killed_member_is_restarted_and_population_finishes(tmp_path, synchronous):
    backend = LocalBackend(workers=2)
    cfg = quadratic_config(60)
    cfg.pbt.synchronous = synchronous
    try:
        pop = Population.create(cfg, tmp_path, QuadraticDiesOnceTask(seed=3), backend=backend, log=False)
        results = pop.run()
    finally:
        backend.close()
    restarts = [e for e in results["events"] if e["kind"] == "restart"]
    assert restarts and any(e["member"] == 1 for e in restarts)
    assert all(m["step"] == 60 for m in results["members"])


def test_cli_pbt_survives_a_killed_controller(tmp_path):
    """`lifelong pbt` killed (with its workers) mid-population; `--resume` finishes it."""
    import json
    import subprocess
    import sys
    import time

    from lifelong.checkpoint import CheckpointError, load_checkpoint

    root = tmp_path / "pop"
    args = [sys.executable, "-m", "lifelong.cli", "pbt", str(ROOT / "configs/pbt_ppo_cartpole.yaml"),
            "run.total_steps=3072", "pbt.ready_steps=512", "pbt.population=2", "pbt.quantile=0.5",
            "run.eval_episodes=2", "run.eval_num_envs=2", "--run-dir", str(root)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        rounds = 0
        while time.time() < deadline and proc.poll() is None:
            try:
                rounds = load_checkpoint(root / "population.pt")["rounds"]
            except (CheckpointError, FileNotFoundError):
                rounds = 0
            if rounds >= 2:
                break
            time.sleep(0.2)
        assert rounds >= 2, proc.stderr.read() if proc.poll() is not None else "no progress"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and its worker processes
        proc.wait()
    assert not (root / "results.json").exists()
    done = subprocess.run([sys.executable, "-m", "lifelong.cli", "pbt", "--resume", str(root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "best member" in done.stdout
    results = json.loads((root / "results.json").read_text())
    assert all(m["step"] == 3072 for m in results["members"])
    assert "member" in done.stderr and "score" in done.stderr  # the terminal table


def test_asynchronous_mode_decides_per_member(tmp_path):
    pop = toy_population(tmp_path, total=200, synchronous=False)
    results = pop.run()
    assert results["best_score"] > 1.15
    assert all(m["step"] == 200 for m in results["members"])
    assert any(e["kind"] == "exploit" for e in results["events"])
