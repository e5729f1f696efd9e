"""The memoryless core: an MLP applied to each step independently (the control for memory models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.registry import MEMORY

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass
class MLPConfig:
    """Settings of the ``mlp`` core."""

    name: str = setting("mlp", "Memory module.", registry="memory")
    hidden: list[int] = setting([64, 64], "Hidden layer widths.")
    activation: Literal["tanh", "relu", "elu", "gelu", "silu", "leaky_relu"] = setting("tanh", "Activation.")
    layer_norm: bool = setting(False, "LayerNorm before each activation.")

    def validate(self, prefix: str) -> None:
        """Reject empty or non-positive widths."""
        from lifelong.config import ConfigError

        if any(w < 1 for w in self.hidden):
            raise ConfigError(f"{prefix}hidden: {self.hidden!r} has a width below 1 (allowed: positive ints)")


def mlp(sizes: list[int], activation: str, layer_norm: bool = False, last_activation: bool = True) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            if layer_norm:
                layers.append(nn.LayerNorm(sizes[i + 1]))
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPMemory(Memory):
    """A feed-forward core behind the ``Memory`` interface; its state is the empty tuple."""

    recurrent = False

    def __init__(self, input_dim: int, cfg: MLPConfig) -> None:
        super().__init__()
        self.net = mlp([input_dim, *cfg.hidden], cfg.activation, cfg.layer_norm)
        self.output_dim = cfg.hidden[-1] if cfg.hidden else input_dim

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """No state."""
        return ()

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Apply the MLP to every step."""
        return self.net(x), state


@MEMORY.register("mlp", config=MLPConfig, summary="No memory: an MLP on each step (the control).")
def make_mlp(input_dim: int, cfg: MLPConfig) -> MLPMemory:
    """Build the ``mlp`` core."""
    return MLPMemory(input_dim, cfg)
