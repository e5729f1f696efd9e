"""Runs end to end: run dir contents, TensorBoard scalars, resume (also after SIGKILL), divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lifelong.checkpoint import CheckpointDir
from lifelong.config import load_config
from lifelong.run import DivergedError, Run, make_trainer, train

ROOT = Path(__file__).resolve().parent.parent
SHORT = [
    "run.total_steps=2048",
    "run.eval_every=1024",
    "run.eval_episodes=4",
    "run.checkpoint_every=1024",
    "run.log_every=256",
    "run.progress=false",
    "agent.num_steps=32",
    "agent.epochs=2",
]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series TensorBoard would show for ``run_dir`` (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class NaNRewardEnv(gym.Env):
    """A one-dimensional env whose reward turns NaN after 300 steps (to make PPO's losses diverge)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t > 300 else 1.0
        return np.zeros(1, np.float32), reward, False, self.t % 50 == 0, {}


def test_run_dir_contents_and_scalar_names(tmp_path):
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", SHORT)
    results = train(cfg, tmp_path)
    assert (tmp_path / "config.yaml").is_file()
    assert load_config(tmp_path / "config.yaml") == cfg  # the resolved config reloads to the same thing
    assert [p.name for p in CheckpointDir(tmp_path / "checkpoints").paths()][-1] == "step_000000002048.pt"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert saved["steps"] == 2048
    assert saved["final_eval"]["episodes"] == 4
    assert [e["step"] for e in saved["evals"]] == [1024, 2048]
    series = scalars(tmp_path)
    for name in ["charts/episodic_return", "charts/episodic_length", "charts/sps", "time/env", "time/inference",
                 "time/learn", "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                 "eval/return"]:
        assert name in series, name
    assert max(step for step, _ in series["charts/sps"]) == 2048


def test_resume_restores_state_and_continues_step_axis(tmp_path):
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", SHORT + ["env.normalize_obs=true"])
    train(cfg, tmp_path)
    run, payload = Run.resume(tmp_path, ["run.total_steps=4096"], logger=False)
    assert run.step == 2048
    # RNG states come back exactly as they were when the checkpoint was written.
    assert torch.equal(torch.get_rng_state(), payload["rng"]["torch"])
    trainer = make_trainer(run.cfg, run)
    trainer.load_state_dict(payload["trainer"])
    saved = payload["trainer"]
    for key, value in trainer.agent.state_dict().items():
        torch.testing.assert_close(value, saved["agent"][key])
    opt_state = trainer.optimizer.state_dict()
    assert opt_state["steps"] == saved["optimizer"]["steps"] > 0
    torch.testing.assert_close(opt_state["exp_avg_sq"], saved["optimizer"]["exp_avg_sq"])
    env_state = trainer.env_state()
    assert env_state and float(env_state["obs_rms"]["count"]) > 2048
    for key in ("mean", "var", "count"):
        torch.testing.assert_close(env_state["obs_rms"][key], saved["env"]["obs_rms"][key])
    run.close()

    results = train(resume=tmp_path, overrides=["run.total_steps=4096"])
    assert results["steps"] == 4096
    assert [e["step"] for e in results["evals"]] == [1024, 2048, 3072, 4096]
    steps = [s for s, _ in scalars(tmp_path)["charts/sps"]]
    assert steps == sorted(set(steps)), "resumed curves must continue, not restart or overlap"
    assert steps[0] < 2048 < steps[-1] == 4096


def test_cross_section_check_happens_before_the_run_dir_exists(tmp_path):
    from lifelong.config import ConfigError

    with pytest.raises(ConfigError, match="agent.minibatch_size: 512 exceeds the rollout size"):
        load_config(ROOT / "configs/ppo_cartpole.yaml", ["agent.minibatch_size=512"])


def test_refuses_to_overwrite_an_existing_run(tmp_path):
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", SHORT + ["run.total_steps=256", "agent.num_steps=32"])
    train(cfg, tmp_path)
    from lifelong.run import RunDirError

    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg, tmp_path)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lifelong.checkpoint as ck

    real_save = ck.save_checkpoint
    calls = 0

    def save_then_die_mid_write(path, payload):
        global calls
        calls += 1
        if calls == 2:
            # Die the way a SIGKILL mid-write leaves things: a partial temporary file, no rename.
            with open(path.with_name("." + path.name + ".tmp-" + str(os.getpid())), "wb") as f:
                f.write(ck.MAGIC + b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(path, payload)

    ck.save_checkpoint = save_then_die_mid_write
    from lifelong.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigkill_mid_checkpoint_resumes_from_previous_good_one(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = ["train", str(ROOT / "configs/ppo_cartpole.yaml"), "--run-dir", str(run_dir), *SHORT,
            "run.total_steps=4096", "run.eval_every=0"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    names = [p.name for p in CheckpointDir(run_dir / "checkpoints").paths()]
    assert names == ["step_000000001024.pt"]
    assert list((run_dir / "checkpoints").glob(".step_*tmp*")), "the interrupted write left its temporary file"

    proc = subprocess.run([sys.executable, "-m", "lifelong.cli", "train", "--resume", str(run_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "at step 1024" in proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4096
    assert not list((run_dir / "checkpoints").glob(".step_*tmp*")), "stale temporary files are cleaned up"


def test_plain_sigkill_then_resume_continues_step_count(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "lifelong.cli", "train", str(ROOT / "configs/ppo_cartpole.yaml"),
            "--run-dir", str(run_dir), *SHORT, "run.total_steps=10000000", "run.eval_every=0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ckpts = CheckpointDir(run_dir / "checkpoints")
        import time

        deadline = time.time() + 120
        while len(ckpts.paths()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(ckpts.paths()) >= 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = int(ckpts.paths()[-1].name[5:17])
    run, _ = Run.resume(run_dir, logger=False)
    assert run.step == last >= 2048
    run.close()


def test_nan_loss_stops_without_overwriting_checkpoint(tmp_path):
    cfg = load_config(
        ROOT / "configs/ppo_cartpole.yaml",
        SHORT + ["env.backend=gymnasium", "env.id=test_run:NaNRewardEnv", "env.num_envs=2",
                 "agent.minibatch_size=64", "run.checkpoint_every=128", "run.eval_every=0", "run.total_steps=4096"],
    )
    with pytest.raises(DivergedError, match=r"step \d+: losses/\w+ is nan"):
        train(cfg, tmp_path)
    ckpts = CheckpointDir(tmp_path / "checkpoints").paths()
    assert ckpts, "checkpoints from before the divergence are kept"
    _, payload = CheckpointDir(tmp_path / "checkpoints").latest()
    assert payload["step"] <= 600  # written before the NaN rewards began (2 envs x 300 steps)
    assert not (tmp_path / "results.json").exists()
