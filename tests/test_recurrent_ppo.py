"""Recurrent PPO: sequence replay from stored chunk states reproduces the rollout exactly."""

from pathlib import Path

import pytest
import torch

from lifelong.config import load_config
from lifelong.registry import MEMORY
from lifelong.run import Run, make_trainer

ROOT = Path(__file__).resolve().parent.parent
RECURRENT = [name for name in MEMORY.names() if name != "mlp"]


@pytest.mark.parametrize("bptt", [0, 8])
@pytest.mark.parametrize("core", RECURRENT)
def test_sequence_replay_reproduces_rollout_log_probs_and_values(tmp_path, core, bptt):
    """Before any gradient step, replaying the rollout from the stored states gives ratio 1 exactly:
    resets at is_first, chunk start states and the env/sequence layout all line up."""
    cfg = load_config(ROOT / "configs/ppo_cartpole.yaml", [
        f"agent.memory={{name: {core}}}", f"agent.bptt={bptt}", "agent.num_steps=32", "env.num_envs=4",
        "agent.minibatch_size=64", "run.total_steps=256", "run.progress=false", "run.eval_every=0"])
    run = Run.create(cfg, tmp_path, logger=False)
    trainer = make_trainer(cfg, run)
    assert trainer.agent.recurrent
    seen = {"batches": 0, "resets": 0}

    def check_replay(batches, returns, old_values, clip):
        for obs, act, old_logp, old_value, _, _, first, state in batches.epoch():
            with torch.no_grad():
                logp, _, value = trainer.agent.evaluate_actions(obs, act, first, state)
            torch.testing.assert_close(logp, old_logp, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(value, old_value, atol=2e-5, rtol=1e-4)
            seen["batches"] += 1
            seen["resets"] += int(first[1:].sum())
        return {}

    trainer._update = check_replay
    trainer.train()
    run.close()
    assert seen["batches"] >= 2 and seen["resets"] > 0  # episodes ended inside replayed sequences
