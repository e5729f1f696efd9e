"""Probes of a Dreamer CartPole agent: what its critic, continue head and decoder say along real episodes.

Three subcommands (figures in docs/benchmarks.md, "The track's edge"):

``episodes CHECKPOINT``
    Plays Gymnasium's CartPole-v1 with the checkpoint's deterministic policy (posterior
    modes, argmax actions). For each episode it prints the real state, the critic's value
    ``V``, the continue head's probability (on the posterior features) and the policy's
    probability of pushing right at ten points along the episode and its last steps.
    It also prints the continue probability at the final observation and the decoder's
    mean absolute error per state component (mid-track |x| <= 1 and beyond). Last comes
    the open-loop error: the prior rolled 15 steps from the posterior with the actions
    actually taken.

``continue-head``
    Trains the world model of ``configs/dreamer_cartpole.yaml`` alone on random-action
    data (5,000 steps; every episode ends by the pole's angle) and prints, every 250
    updates, the continue probability on terminal steps and on the others.

``critic-step``
    Fits the preset's zero-initialised two-hot critic (255 bins) to a constant target of
    10 on random features with Adam, and prints its prediction after 100, 300, 1,000 and
    3,000 updates for each learning rate.

    python benchmarks/dreamer_cartpole_probe.py episodes RUN_DIR/checkpoints/step_000000007500.pt [--episodes 3]
    python benchmarks/dreamer_cartpole_probe.py continue-head [--updates 1000]
    python benchmarks/dreamer_cartpole_probe.py critic-step [--lrs 1e-4 3e-4 1e-3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from lifelong.config import load_config
from lifelong.logger import Logger
from lifelong.run import Run, load_trainer, make_trainer

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "configs" / "dreamer_cartpole.yaml"
COMPONENTS = "x, x_dot, theta, theta_dot"


@torch.no_grad()
def probe_episodes(checkpoint: Path, episodes: int, horizon: int = 15) -> None:
    """Per-step value, continuation and reconstruction along deterministic episodes (module doc)."""
    trainer, _, _ = load_trainer(checkpoint)
    agent, wm = trainer.agent, trainer.agent.world_model
    env = gym.make("CartPole-v1")
    for episode in range(episodes):
        obs, _ = env.reset(seed=100 + episode)
        state, first = agent.initial_state(1, "cpu"), torch.ones(1, dtype=torch.bool)
        feats, latents, actions, observations, rows = [], [], [], [], []
        done = terminated = False
        while not done:
            feat, latent = agent.observe_step(torch.as_tensor(obs, dtype=torch.float32)[None], state, first,
                                              sample=False)
            log_probs, _ = agent.actor(feat)
            action = agent.actor.sample(feat, deterministic=True)
            rows.append((obs[0], obs[2], agent.critic(feat).item(), wm.predict_continue(feat).item(),
                         log_probs.exp()[0, 1].item()))
            feats.append(feat)
            latents.append(latent)
            actions.append(action)
            observations.append(obs)
            obs, _, terminated, truncated, _ = env.step(int(action.argmax(-1)))
            done = terminated or truncated
            state, first = (latent, action), torch.zeros(1, dtype=torch.bool)
        final_feat, _ = agent.observe_step(torch.as_tensor(obs, dtype=torch.float32)[None], state, first,
                                           sample=False)
        n = len(rows)
        print(f"episode {episode}: {n} steps, {'terminated' if terminated else 'truncated'} at x {obs[0]:+.2f}, "
              f"theta {obs[2]:+.3f}; at the final observation continue {wm.predict_continue(final_feat).item():.3f}, "
              f"V {agent.critic(final_feat).item():.1f}")
        for t in sorted(set(list(range(0, n, max(1, n // 10))) + [max(0, n - 3), n - 1])):
            x, theta, value, cont, right = rows[t]
            print(f"  t={t:4d}  x={x:+.2f}  theta={theta:+.3f}  V={value:7.2f}  continue={cont:.3f}  "
                  f"pi(right)={right:.2f}")
        real = np.asarray(observations)
        error = np.abs(wm.decode(torch.cat(feats)).numpy() - real)
        far = np.abs(real[:, 0]) > 1.0
        for name, rows_mask in (("|x| <= 1", ~far), ("|x| > 1", far)):
            if rows_mask.any():
                print(f"  decoder |error| ({COMPONENTS}) where {name} ({int(rows_mask.sum())} steps): "
                      + " ".join(f"{v:.3f}" for v in error[rows_mask].mean(0)))
        open_loop = []
        for t in range(0, n - horizon, 10):
            memory, stoch = latents[t]
            start = {"memory": memory, "stoch": stoch, "deter": feats[t][:, :-stoch.shape[-1]], "feat": feats[t]}
            taken = iter(torch.cat(actions[t:t + horizon + 1]).split(1))
            traj = wm.imagine(lambda _feat: next(taken), start, horizon, sample=False)
            predicted = wm.decode(traj["feat"][1:, 0]).numpy()
            open_loop.append(np.abs(predicted - real[t + 1:t + horizon + 1]))
        if open_loop:
            mean = np.stack(open_loop).mean(0)
            print(f"  open-loop |error| ({COMPONENTS}) after " + "; ".join(
                f"{k} steps: " + " ".join(f"{v:.3f}" for v in mean[k - 1]) for k in (1, 5, 10, horizon)))


def probe_continue_head(updates: int, data_steps: int = 5000) -> None:
    """World-model updates on random-action data; continue probabilities on terminal and other steps."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(PRESET, ["run.progress=false"])
        logger = Logger(Path(tmp), total_steps=cfg.run.total_steps, progress=False, tensorboard=False)
        trainer = make_trainer(cfg, Run(cfg=cfg, dir=Path(tmp), device=torch.device("cpu"), logger=logger))
        env, wm, hp = trainer.env, trainer.agent.world_model, trainer.hp
        obs, num = env.reset(seed=0), env.num_envs
        is_first = torch.ones(num, dtype=torch.bool)
        for _ in range(data_steps // num):
            action = trainer.random_actions(num)
            step = env.step(trainer.agent.to_env(action))
            trainer.replay.add(obs, action, step.reward.float(), step.terminated, step.truncated, is_first,
                               step.final_obs)
            obs, is_first = step.obs, step.is_first
        for update in range(1, updates + 1):
            trainer.train_world_model(trainer.replay.sample(hp.batch_size, hp.sequence_length))
            if update % 250:
                continue
            with torch.no_grad():
                ends, others = [], []
                for _ in range(8):
                    probe = wm.compute_loss(trainer.replay.sample(hp.batch_size, hp.sequence_length), sample=False)
                    if probe.terminal is not None:
                        ends.append(wm.predict_continue(probe.terminal["feat"]))
                    others.append(wm.predict_continue(probe.posterior["feat"]).flatten())
            end, other = torch.cat(ends), torch.cat(others)
            print(f"update {update}: continue on {end.numel()} terminal steps mean {end.mean():.3f} "
                  f"({(end < 0.5).float().mean():.0%} below 0.5); on other steps mean {other.mean():.3f}", flush=True)


def probe_critic_step(lrs: list[float], target: float = 10.0) -> None:
    """Two-hot critic fitted to a constant from its zero initialisation, per Adam learning rate."""
    cfg = load_config(PRESET, [])
    from lifelong.agents.dreamer import DreamerAgent

    for lr in lrs:
        torch.manual_seed(0)
        agent = DreamerAgent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), cfg.agent)
        critic, feat = agent.critic, torch.randn(512, agent.world_model.feat_dim)
        opt = torch.optim.Adam(critic.parameters(), lr=lr, eps=cfg.agent.ac_eps)
        marks = []
        for update in range(1, 3001):
            loss = critic.loss(feat, torch.full((512,), target)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if update in (100, 300, 1000, 3000):
                with torch.no_grad():
                    marks.append(f"{update}: {critic(feat).mean().item():.2f}")
        print(f"critic lr {lr:g}, target {target:g}: " + ", ".join(marks), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("episodes", help="value, continuation and reconstruction along real episodes")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--episodes", type=int, default=3)
    p = sub.add_parser("continue-head", help="the continue head on random-action data")
    p.add_argument("--updates", type=int, default=1000)
    p = sub.add_parser("critic-step", help="how fast the two-hot critic fits a constant")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "episodes":
        probe_episodes(args.checkpoint, args.episodes)
    elif args.command == "continue-head":
        probe_continue_head(args.updates)
    else:
        probe_critic_step(args.lrs)


if __name__ == "__main__":
    main()
