"""VecEnv wrappers: the platform's episode tracker and the running observation/reward normalisers."""

from __future__ import annotations

from typing import Any

import torch

from lifelong.envs.base import Step, VecEnv


def _stat_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else running sums and statistics use float64.
    return torch.float32 if device.type == "mps" else torch.float64


class VecEnvWrapper(VecEnv):
    """A VecEnv around another one; every method forwards to ``env`` unless overridden."""

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.device = env.device
        self.param_space = env.param_space

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the inner env."""
        return self.env.reset(seed)

    def step(self, action: torch.Tensor) -> Step:
        """Step the inner env."""
        return self.env.step(action)

    def close(self) -> None:
        """Close the inner env."""
        self.env.close()

    def set_training(self, training: bool) -> None:
        """Forward the training flag down the chain."""
        self.env.set_training(training)

    def set_params(self, params: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Set the inner env's pending params (see ``VecEnv.set_params``)."""
        self.env.set_params(params, rows)

    @property
    def current_params(self) -> torch.Tensor | None:
        """The inner env's current params."""
        return self.env.current_params

    def state_dict(self) -> dict[str, Any]:
        """The inner env's state."""
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner env's state."""
        self.env.load_state_dict(state)

    @property
    def unwrapped(self) -> VecEnv:
        """The innermost backend env."""
        return self.env.unwrapped


class EpisodeStats(VecEnvWrapper):
    """The platform's episode tracker: raw return and length of every episode, per env.

    It must sit directly on the backend (before any reward scaling). Each step puts
    ``info["episode"] = {"done": bool [B], "return": float [B], "length": int64 [B]}``;
    return and length are those of the episodes that ended at this step (valid where
    ``done``) and, elsewhere, of the episode so far. For a parameterized env the dict
    also holds ``"params"`` ``[B, P]``: the params those episodes ran with (the
    backend's ``info["params"]``).
    """

    def __init__(self, env: VecEnv) -> None:
        super().__init__(env)
        self._return = torch.zeros(self.num_envs, dtype=_stat_dtype(self.device), device=self.device)
        self._length = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the inner env and start every episode's sums from zero."""
        self._return.zero_()
        self._length.zero_()
        return self.env.reset(seed)

    def step(self, action: torch.Tensor) -> Step:
        """Step the inner env and report the episodes that ended."""
        step = self.env.step(action)
        done = step.terminated | step.truncated
        ret = self._return + step.reward
        length = self._length + 1
        step.info["episode"] = {"done": done, "return": ret, "length": length}
        if "params" in step.info:
            step.info["episode"]["params"] = step.info["params"]
        # new tensors, so the ones just reported stay intact
        self._return = ret.masked_fill(done, 0.0)
        self._length = length.masked_fill(done, 0)
        return step


class RunningMeanStd:
    """Running mean and (population) variance of a stream of batches, merged with Chan's parallel update."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4) -> None:
        dtype = _stat_dtype(device)
        self.mean = torch.zeros(shape, dtype=dtype, device=device)
        self.var = torch.ones(shape, dtype=dtype, device=device)
        self.count = float(epsilon)  # a tiny prior count avoids dividing by zero before the first batch

    def update(self, x: torch.Tensor) -> None:
        """Merge the batch ``x [N, *shape]`` into the statistics."""
        batch_var, batch_mean = torch.var_mean(x.to(self.mean.dtype), dim=0, correction=0)
        n, count = x.shape[0], self.count
        total = count + n
        delta = batch_mean.sub_(self.mean)
        self.mean.add_(delta, alpha=n / total)
        # var <- (count * var + n * batch_var + delta^2 * count * n / total) / total
        self.var.mul_(count / total).add_(batch_var, alpha=n / total).addcmul_(delta, delta, value=count * n / total**2)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """Mean, variance and count as plain tensors/floats."""
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any], key: str) -> None:
        """Restore statistics saved by ``state_dict``; ``key`` names them in errors."""
        mean = torch.as_tensor(state["mean"])
        if tuple(mean.shape) != tuple(self.mean.shape):
            raise ValueError(
                f"env state {key!r}: mean has shape {tuple(mean.shape)}, this env needs {tuple(self.mean.shape)}"
            )
        self.mean = mean.to(self.mean.device, self.mean.dtype).clone()
        self.var = torch.as_tensor(state["var"]).to(self.var.device, self.var.dtype).clone()
        self.count = float(state["count"])


class NormalizeObs(VecEnvWrapper):
    """Normalise observations (and ``final_obs``) by running mean/std, clipped to ``±clip``.

    Statistics update from every batch of observations returned by ``reset`` and ``step``
    while ``training`` is True and are frozen otherwise.
    """

    state_key = "obs_rms"

    def __init__(self, env: VecEnv, clip: float = 10.0, training: bool = True, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        shape = tuple(env.observation_space.shape or ())
        self.obs_rms = RunningMeanStd(shape, self.device)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.training = training
        self._refresh()

    def _refresh(self) -> None:
        inv_std = torch.rsqrt(self.obs_rms.var + self.epsilon)
        self._inv_std = inv_std.to(torch.float32)
        self._shift = (self.obs_rms.mean * inv_std).neg_().to(torch.float32)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalise ``obs`` with the current statistics (no update): ``(obs - mean) / std``, clipped."""
        return torch.addcmul(self._shift, obs, self._inv_std).clamp_(-self.clip, self.clip)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the inner env and return normalised first observations."""
        obs = self.env.reset(seed)
        if self.training:
            self.obs_rms.update(obs)
            self._refresh()
        return self.normalize(obs)

    def step(self, action: torch.Tensor) -> Step:
        """Step the inner env and normalise ``obs`` and ``final_obs`` with the same statistics."""
        step = self.env.step(action)
        if self.training:
            self.obs_rms.update(step.obs)
            self._refresh()
        obs = self.normalize(step.obs)
        step.final_obs = obs if step.final_obs is step.obs else self.normalize(step.final_obs)
        step.obs = obs
        return step

    def set_training(self, training: bool) -> None:
        """Update statistics (True) or freeze them (False), here and below."""
        self.training = training
        self.env.set_training(training)

    def state_dict(self) -> dict[str, Any]:
        """The inner state plus this wrapper's statistics under ``obs_rms``."""
        return {**self.env.state_dict(), self.state_key: self.obs_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this wrapper's statistics and pass the rest down."""
        if self.state_key not in state:
            raise KeyError(
                f"env state has no {self.state_key!r} entry (keys: {sorted(state)}); was env.normalize_obs off?"
            )
        self.obs_rms.load_state_dict(state[self.state_key], self.state_key)
        self._refresh()
        self.env.load_state_dict(state)


class ScaleReward(VecEnvWrapper):
    """Divide rewards by the running std of the discounted return (as SB3 VecNormalize), clipped to ``±clip``.

    The per-env discounted return ``R <- gamma * R + r`` restarts at every episode end;
    its statistics update only while ``training`` is True.
    """

    state_key = "return_rms"

    def __init__(
        self, env: VecEnv, gamma: float = 0.99, clip: float = 10.0, training: bool = True, epsilon: float = 1e-8
    ) -> None:
        super().__init__(env)
        self.return_rms = RunningMeanStd((), self.device)
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.training = training
        self._returns = torch.zeros(self.num_envs, dtype=self.return_rms.mean.dtype, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the inner env and the discounted returns."""
        self._returns.zero_()
        return self.env.reset(seed)

    def step(self, action: torch.Tensor) -> Step:
        """Step the inner env and scale its reward."""
        step = self.env.step(action)
        returns = torch.add(step.reward, self._returns, alpha=self.gamma)
        if self.training:
            self.return_rms.update(returns)
        scale = torch.rsqrt(self.return_rms.var + self.epsilon).to(torch.float32)
        step.reward = (step.reward * scale).clamp_(-self.clip, self.clip)
        self._returns = returns.masked_fill_(step.terminated | step.truncated, 0.0)
        return step

    def set_training(self, training: bool) -> None:
        """Update statistics (True) or freeze them (False), here and below."""
        self.training = training
        self.env.set_training(training)

    def state_dict(self) -> dict[str, Any]:
        """The inner state plus this wrapper's statistics under ``return_rms``."""
        return {**self.env.state_dict(), self.state_key: self.return_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this wrapper's statistics and pass the rest down."""
        if self.state_key not in state:
            raise KeyError(
                f"env state has no {self.state_key!r} entry (keys: {sorted(state)}); was env.normalize_reward off?"
            )
        self.return_rms.load_state_dict(state[self.state_key], self.state_key)
        self.env.load_state_dict(state)
