"""Encoders and decoders of the latent world model: MLPs on symlog vectors, CNNs on images ``[C, H, W]``."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.memory.mlp import mlp


def dense(sizes: list[int], last_activation: bool = True) -> nn.Sequential:
    """DreamerV3-style layers: Linear -> LayerNorm -> SiLU for each width in ``sizes[1:]``."""
    return mlp(sizes, "silu", layer_norm=True, last_activation=last_activation)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of every pixel of ``[N, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise channels pixel by pixel."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def image_stages(obs_shape: tuple[int, ...], stages: int) -> tuple[int, int]:
    """Height and width after ``stages`` stride-2 convolutions; both sides must be divisible by ``2**stages``."""
    _, height, width = obs_shape
    factor = 2**stages
    if height % factor or width % factor:
        raise ValueError(f"image observation shape {tuple(obs_shape)}: height and width must be divisible by "
                         f"{factor} ({stages} stride-2 conv layers)")
    return height // factor, width // factor


class ConvEncoder(nn.Module):
    """``stages`` conv layers (kernel 4, stride 2, channels depth * 2**i, ChannelNorm, SiLU), flattened."""

    def __init__(self, obs_shape: tuple[int, int, int], depth: int, stages: int = 4) -> None:
        super().__init__()
        height, width = image_stages(obs_shape, stages)
        layers: list[nn.Module] = []
        channels = obs_shape[0]
        for i in range(stages):
            out = depth * 2**i
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), ChannelNorm(out), nn.SiLU()]
            channels = out
        self.net = nn.Sequential(*layers)
        self.obs_shape = tuple(obs_shape)
        self.output_dim = channels * height * width

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[..., output_dim]`` of images ``[..., C, H, W]`` already scaled to about [-0.5, 0.5]."""
        lead = image.shape[:-3]
        return self.net(image.reshape(-1, *self.obs_shape)).reshape(*lead, self.output_dim)


class ConvDecoder(nn.Module):
    """Linear to a ``[depth * 2**(stages-1), H/2**stages, W/2**stages]`` map, transposed convs up to ``[C, H, W]``."""

    def __init__(self, feat_dim: int, obs_shape: tuple[int, int, int], depth: int, stages: int = 4) -> None:
        super().__init__()
        self.height, self.width = image_stages(obs_shape, stages)
        self.channels = depth * 2 ** (stages - 1)
        self.project = nn.Linear(feat_dim, self.channels * self.height * self.width)
        layers: list[nn.Module] = []
        channels = self.channels
        for i in range(stages - 1):
            out = depth * 2 ** (stages - 2 - i)
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), ChannelNorm(out), nn.SiLU()]
            channels = out
        layers.append(nn.ConvTranspose2d(channels, obs_shape[0], 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        self.obs_shape = tuple(obs_shape)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Mean images ``[..., C, H, W]`` for features ``[..., feat_dim]``."""
        lead = feat.shape[:-1]
        x = self.project(feat.reshape(-1, feat.shape[-1])).view(-1, self.channels, self.height, self.width)
        return self.net(x).reshape(*lead, *self.obs_shape)
