"""``CurriculumEnv``: a parameterized env whose every episode runs with params proposed by a teacher.

The wrapper sits on top of the env chain (above ``EpisodeStats``, so returns are raw) and
follows the parameter contract of ``VecEnv``: each row holds pending params for its next
episode. At ``reset`` every row gets a sample for its first episode and another for its
second; after each ``step``, the rows whose episode ended report ``(params used, return)``
to the teacher in completion order and get a fresh sample for the episode after the one
that has just started. The teacher's samples are exactly the params the env runs.

Teachers that score episodes by advantages (PLR) cannot be told at the end of an episode:
its score is the mean ``|GAE advantage|`` over its steps, known only once the learner has
computed the rollout's advantages. For them the wrapper keeps the ended episodes and
per-row running sums, and ``add_scores(abs_advantages, episode_end)`` (called by PPO after
each GAE pass) completes the episodes of that rollout and reports them with
``extras={"score": ...}``.

TensorBoard: ``curriculum/<metric>`` from the teacher (``mean_alp``, ...) and the sampling
density as the image ``curriculum/density`` every ``curriculum.density_every`` env steps;
test-set figures (``curriculum/mastered``, ``curriculum/test_return``) come from
``evaluate_test_set`` at each evaluation of the run.
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.config import Config, ConfigError
from lifelong.curricula.base import Teacher, build_teacher
from lifelong.envs import make_env
from lifelong.envs.base import Step, VecEnv
from lifelong.envs.wrappers import VecEnvWrapper

SCORED_TEACHERS = ("plr",)


def density_image(density: torch.Tensor, scale: int = 8) -> torch.Tensor:
    """A density ``[R]`` or ``[R, R]`` as a grayscale image ``[1, H, W]`` in ``[0, 1]`` (brightest = densest).

    2-D densities are indexed ``[x, y]``; the image shows ``x`` left to right and ``y``
    bottom to top. 1-D densities become a strip ``scale`` pixels high.
    """
    d = density.detach().float().cpu()
    d = d / d.max().clamp(min=1e-12)
    if d.dim() == 1:
        image = d.unsqueeze(0).expand(scale, -1)
    else:
        image = d.t().flip(0)  # rows: y from high to low; columns: x
    image = image.repeat_interleave(scale, 0).repeat_interleave(scale, 1) if d.dim() == 2 else \
        image.repeat_interleave(scale, 1)
    return image.unsqueeze(0).contiguous()


class CurriculumEnv(VecEnvWrapper):
    """Drives a parameterized env's episode params with a teacher; see the module docstring."""

    def __init__(self, env: VecEnv, teacher: Teacher, logger: Any = None, step_counter: Any = None,
                 density_every: int = 0) -> None:
        super().__init__(env)
        if env.param_space is None:
            raise ConfigError("curriculum: the env declares no parameter space (param_space is None); "
                              "use a parameterized env")
        self.teacher = teacher
        self.logger = logger
        self.step_counter = step_counter  # an object with ``.step`` (the run), for logging
        self.density_every = int(density_every)
        self._next_density = 0
        self.scored = teacher.kind in SCORED_TEACHERS
        n, device = env.num_envs, env.device
        self._score_sum = torch.zeros(n, dtype=torch.float64)
        self._score_count = torch.zeros(n, dtype=torch.int64)
        self._waiting: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (rows, params, returns)
        self.device = device

    def _sample(self, n: int) -> torch.Tensor:
        return self.teacher.sample(n).to(self.env.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """First and second episode params for every row, then the inner reset."""
        n = self.env.num_envs
        self.env.set_params(self._sample(n))
        obs = self.env.reset(seed)
        self.env.set_params(self._sample(n))
        self._score_sum.zero_()
        self._score_count.zero_()
        self._waiting.clear()
        return obs

    def step(self, action: torch.Tensor) -> Step:
        """Step; report ended episodes to the teacher (or keep them for scoring); queue new params."""
        step = self.env.step(action)
        episode = step.info["episode"]
        done = episode["done"]
        if bool(done.any()):
            rows = done.nonzero().squeeze(-1)
            params = episode["params"].index_select(0, rows).cpu()
            returns = episode["return"].index_select(0, rows).float().cpu()
            if self.scored:
                self._waiting.append((rows.cpu(), params, returns))
            else:
                self.teacher.update(params, returns)
            self.env.set_params(self._sample(int(rows.numel())), rows=rows)
        self._log()
        return step

    def add_scores(self, abs_advantages: torch.Tensor, episode_end: torch.Tensor) -> None:
        """Complete the waiting episodes of a rollout with their mean ``|advantage|`` and report them.

        ``abs_advantages`` and ``episode_end`` are ``[T, B]`` for the rollout just collected
        (``episode_end[t]``: the episode of that row ended with ``action[t]``). Each row's
        running sum covers the steps of its current episode since the last end, across
        rollouts. The waiting episodes are exactly the ends inside ``episode_end``, in order.
        """
        if not self.scored:
            return
        adv = abs_advantages.detach().double().cpu()
        ends = episode_end.detach().cpu()
        steps = adv.shape[0]
        # Within the rollout, segment k of a row runs from just after its (k-1)-th end to its k-th end.
        total = adv.cumsum(0)  # [T, B]
        ends_t = [torch.nonzero(ends[:, b]).squeeze(-1).tolist() for b in range(ends.shape[1])]
        scores: dict[tuple[int, int], float] = {}
        for b, times in enumerate(ends_t):
            start, carried_sum, carried_count = 0, float(self._score_sum[b]), int(self._score_count[b])
            for k, t in enumerate(times):
                seg = float(total[t, b] - (total[start - 1, b] if start > 0 else 0.0))
                length = t - start + 1
                if k == 0:
                    seg, length = seg + carried_sum, length + carried_count
                scores[(b, k)] = seg / max(length, 1)
                start = t + 1
            tail = float(total[steps - 1, b] - (total[start - 1, b] if start > 0 else 0.0))
            if times:
                self._score_sum[b], self._score_count[b] = tail, steps - start
            else:
                self._score_sum[b] += tail
                self._score_count[b] += steps
        seen: dict[int, int] = {}
        for rows, params, returns in self._waiting:
            values = []
            for r in rows.tolist():
                k = seen.get(r, 0)
                seen[r] = k + 1
                values.append(scores.get((r, k), 0.0))
            self.teacher.update(params, returns, {"score": torch.tensor(values, dtype=torch.float32)})
        self._waiting.clear()

    def _log(self) -> None:
        if self.logger is None or self.step_counter is None or not self.density_every:
            return
        step = self.step_counter.step
        if step < self._next_density:
            return
        self._next_density = (step // self.density_every + 1) * self.density_every
        metrics = {k if k.startswith("curriculum/") else f"curriculum/{k}": float(v)
                   for k, v in self.teacher.metrics().items()}
        self.logger.scalars(metrics, step)
        self.logger.image("curriculum/density", density_image(self.teacher.density()), step)

    def state_dict(self) -> dict[str, Any]:
        """The inner env's state plus the teacher's under ``curriculum``."""
        return {**self.env.state_dict(), "curriculum": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher (when saved) and the inner env."""
        if "curriculum" in state:
            self.teacher.load_state_dict(state["curriculum"])
        self.env.load_state_dict({k: v for k, v in state.items() if k != "curriculum"})


def make_training_env(cfg: Config, run: Any) -> VecEnv:
    """The run's training env: ``make_env``, wrapped in ``CurriculumEnv`` when ``cfg.curriculum`` is set."""
    env = make_env(cfg.env, seed=run.env_seed, device=run.device)
    if cfg.curriculum is None:
        return env
    cur = cfg.curriculum
    if env.param_space is None:
        env.close()
        raise ConfigError(f"curriculum: env.id {cfg.env.id!r} declares no parameter space "
                          "(allowed: parameterized envs, e.g. native ParamCartPole, GatedCorridor, StumpTracks)")
    seed = cfg.run.seed if cur.seed is None else cur.seed
    teacher = build_teacher(cur.teacher, env.param_space, seed)
    return CurriculumEnv(env, teacher, logger=getattr(run, "logger", None), step_counter=run,
                         density_every=cur.density_every)


def test_set_of(cfg: Config, env: VecEnv) -> tuple[torch.Tensor | None, float | None]:
    """The test tasks ``[N, P]`` and mastered threshold: from the config, else from the env (``test_set()``)."""
    cur = cfg.curriculum
    tasks: torch.Tensor | None
    if isinstance(cur.test_set, list):
        tasks = torch.as_tensor(cur.test_set, dtype=torch.float32)
    elif cur.test_set == "env":
        source = getattr(env.unwrapped, "test_set", None)
        tasks = source() if callable(source) else None
    else:
        tasks = None
    threshold = cur.mastered_return
    if threshold is None:
        threshold = getattr(env.unwrapped, "mastered_return", None)
    if tasks is not None:
        tasks = torch.as_tensor(tasks, dtype=torch.float32)
        if tasks.dim() != 2 or tasks.shape[1] != env.param_space.dim:
            raise ConfigError(f"curriculum.test_set: shape {tuple(tasks.shape)} is not [N, {env.param_space.dim}]")
        outside = ~env.param_space.contains(tasks)
        if bool(outside.any()):
            raise ConfigError(f"curriculum.test_set: row {int(outside.nonzero()[0])} lies outside the param space "
                              f"{env.param_space.to_dict()}")
    return tasks, threshold


@torch.no_grad()
def evaluate_test_set(agent: Any, cfg: Config, device: torch.device, env_state: dict[str, Any] | None = None,
                      deterministic: bool = True, max_steps: int = 100_000) -> dict[str, Any] | None:
    """Run one episode per test task (one env per task) with the agent; returns and mastered fraction.

    None when the run has no curriculum or no test set. ``mastered`` is the fraction of tasks
    whose return reaches the mastered threshold (None without a threshold).
    """
    if cfg.curriculum is None:
        return None
    probe = make_env(_with_envs(cfg.env, 1), seed=0, device=device)
    tasks, threshold = test_set_of(cfg, probe)
    probe.close()
    if tasks is None:
        return None
    n = int(tasks.shape[0])
    env = make_env(_with_envs(cfg.env, n), seed=cfg.run.seed + 2_000_003, device=device)
    try:
        env.set_training(False)
        if env_state:
            env.load_state_dict({k: v for k, v in env_state.items() if k != "curriculum"})
        env.set_params(tasks.to(env.device))
        obs = env.reset(seed=cfg.run.seed + 2_000_003)
        state = agent.initial_state(n, device)
        is_first = torch.ones(n, dtype=torch.bool, device=device)
        returns = torch.zeros(n)
        finished = torch.zeros(n, dtype=torch.bool)
        for _ in range(max_steps):
            action, state, _ = agent.act(obs, state, is_first, deterministic=deterministic)
            step = env.step(action)
            episode = step.info["episode"]
            done = episode["done"].cpu()
            newly = done & ~finished
            returns[newly] = episode["return"].cpu().float()[newly]
            finished |= done
            if bool(finished.all()):
                break
            obs, is_first = step.obs, step.is_first
    finally:
        env.close()
    mastered = None if threshold is None else float((returns >= threshold).float().mean())
    return {"returns": returns.tolist(), "mean": float(returns.mean()), "mastered": mastered,
            "threshold": threshold}


def _with_envs(env_cfg: Any, num_envs: int) -> Any:
    """A copy of the env config with ``num_envs`` envs."""
    import dataclasses

    return dataclasses.replace(env_cfg, num_envs=num_envs)
