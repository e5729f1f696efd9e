"""Smoke tests of every `lifelong` command, in subprocesses as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FAST = ["run.total_steps=1024", "run.eval_every=0", "run.eval_episodes=3", "run.checkpoint_every=512",
        "run.progress=false", "agent.epochs=1"]


def lifelong(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    proc = lifelong("train", "configs/ppo_cartpole.yaml", "agent.lr=1e-3", "env.num_envs=16", *FAST,
                    "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"run dir: {run_dir}" in proc.stdout
    assert "tensorboard --logdir" in proc.stdout
    return run_dir


def test_train_writes_the_run_dir(trained):
    assert (trained / "config.yaml").is_file()
    assert "num_envs: 16" in (trained / "config.yaml").read_text()
    assert list(trained.glob("events.out.tfevents.*"))
    assert list((trained / "checkpoints").glob("step_*.pt"))
    assert json.loads((trained / "results.json").read_text())["steps"] == 1024


def test_train_by_preset_name_into_runs_name(tmp_path):
    proc = lifelong("train", "ppo_cartpole", *FAST, "run.name=by_name", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "by_name" / "results.json").is_file()


def test_eval_run_dir_and_checkpoint(trained, tmp_path):
    proc = lifelong("eval", str(trained), "--episodes", "3")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((trained / "eval.json").read_text())
    assert record["episodes"] == 3 and len(record["returns"]) == 3
    assert record["mean"] == pytest.approx(sum(record["returns"]) / 3)
    assert "+-" in proc.stdout
    ckpt = sorted((trained / "checkpoints").glob("step_*.pt"))[-1]
    out = tmp_path / "e.json"
    proc = lifelong("eval", str(ckpt), "--episodes", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["episodes"] == 2


@pytest.mark.parametrize("preset", ["sac_pendulum", "dreamer_cartpole"])
def test_eval_agents_that_report_while_being_built(preset, tmp_path):
    """Off-policy and Dreamer trainers log their replay size when built; eval gives them a console logger."""
    run_dir = tmp_path / "run"
    proc = lifelong("train", f"configs/{preset}.yaml", "run.total_steps=64", "run.eval_every=0",
                    "run.eval_episodes=1", "run.progress=false", "run.stop_return=null", "agent.learning_starts=64",
                    "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    proc = lifelong("eval", str(run_dir), "--episodes", "1")
    assert proc.returncode == 0, proc.stderr
    assert "replay" in proc.stderr.lower()
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1


def test_resume_a_finished_run_with_a_larger_budget(trained):
    proc = lifelong("train", "--resume", str(trained), "run.total_steps=1536")
    assert proc.returncode == 0, proc.stderr
    assert "at step 1024" in proc.stderr
    assert json.loads((trained / "results.json").read_text())["steps"] == 1536


def test_list_shows_every_kind():
    proc = lifelong("list")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ["agents:", "ppo", "memory:", "mlp", "envs:", "envpool", "gymnasium", "configs:", "ppo_cartpole",
                   "teachers:", "world_models:"]:
        assert needle in out, needle
    only = lifelong("list", "configs").stdout
    assert "ppo_cartpole" in only and "agents:" not in only


def test_config_reference_lists_documented_keys():
    proc = lifelong("config")
    assert proc.returncode == 0, proc.stderr
    assert "agent[ppo].gae_lambda" in proc.stdout and "GAE lambda" in proc.stdout
    assert "env.import" in proc.stdout


def test_check_env_good_and_broken():
    good = lifelong("check-env", "CartPole-v1")
    assert good.returncode == 0 and "OK" in good.stdout
    bad = lifelong("check-env", "toy_envs:WrongObsDtype")
    assert bad.returncode == 1
    assert "dtype" in bad.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "configs/ppo_cartpole.yaml", "agent.lrr=1"], "did you mean 'agent.lr'?"),
        (["train", "configs/ppo_cartpole.yaml", "env.id=CartPol-v1"], "env.id"),
        (["train", "ppo_cartpol"], "did you mean preset 'ppo_cartpole'?"),
        (["train", "--resume", "runs/does-not-exist"], "not found"),
        (["eval", "runs/does-not-exist"], "neither a run dir nor a checkpoint"),
        (["train", "configs/ppo_cartpole.yaml", "run.device=cuda:7"], "run.device"),
    ],
)
def test_errors_are_one_line(args, message, tmp_path):
    proc = lifelong(*args, "--run-dir", str(tmp_path / "r")) if args[0] == "train" and "--resume" not in args \
        else lifelong(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]


USER_ENV = '''
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a corridor of `size` cells; reaching the end pays 1."""

    def __init__(self, size=4):
        self.size = size
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos >= self.size
        return np.array([self.pos / self.size], np.float32), float(done), done, False, {}
'''


@pytest.mark.parametrize("how", ["import", "module:Class"])
def test_user_env_plugs_in_without_platform_changes(tmp_path, how):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "envs.py").write_text(USER_ENV)
    (pkg / "__init__.py").write_text(
        "import gymnasium as gym\n"
        "gym.register(id='UserCorridor-v0', entry_point='userpkg.envs:Corridor', max_episode_steps=20)\n"
    )
    env_args = (["env.import=userpkg", "env.id=UserCorridor-v0"] if how == "import"
                else ["env.id=userpkg.envs:Corridor", "env.max_episode_steps=20"])
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lifelong.cli", "train", str(ROOT / "configs/ppo_cartpole.yaml"),
         "env.backend=gymnasium", "env.num_envs=4", "env.kwargs={size: 3}", *env_args, *FAST,
         "run.total_steps=2048", "agent.minibatch_size=128", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    # the corridor is solved by always walking right: return 1 within 20 steps
    assert results["final_eval"]["mean"] == pytest.approx(1.0)
    check = subprocess.run([sys.executable, "-m", "lifelong.cli", "check-env", "userpkg.envs:Corridor"],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout
