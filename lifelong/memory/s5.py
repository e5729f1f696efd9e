"""S5: stacked diagonal complex state-space layers over the resettable linear scan (S5 for RL).

Each layer is the S5 SSM of Smith et al. with the reset convention of Lu et al. (popjaxrl):
``x_t = Lambda_bar * (1 - is_first_t) * x_{t-1} + B_bar u_t`` (a reset zeroes the state
before ``u_t``), ``y_t = 2 Re(C~ x_t) + D * u_t``. Initialisation: Lambda from the normal
part of HiPPO-LegS (real part -0.5), conjugate symmetry keeps P = N/2 states,
``B~ = V^-1 B`` and ``C~ = C V`` from LeCun-normal draws, ``D ~ N(0, 1)``, log step per
state ``~ U[log dt_min, log dt_max]``, zero-order-hold discretisation.

Block: ``x -> [LayerNorm] -> SSM -> GELU -> W1 g * sigmoid(W2 g) -> + x`` after an input
projection to ``d_model``. GELU is the tanh approximation, JAX's default ``nn.gelu`` in the
reference code.

Differences from popjaxrl on purpose: its block applies the same LayerNorm a second time
after the SSM (``do_gtrxl_norm``); we follow the block above. Its C draw calls JAX's
``lecun_normal`` on a ``[H, N, 2]`` array, whose fan-in works out as ``N * H`` (C about
sqrt(H) times smaller than LeCun); we draw C with fan-in N, the state size it reads. B
``[N, H]`` keeps the reference's fan-in N (JAX's input-axis convention). ``clip_eigs`` (default on; off in popjaxrl) keeps ``Re(Lambda)
<= -1e-4`` because our states are carried across rollouts indefinitely, where a growing
mode would diverge (the S5 authors recommend it for unbounded sequence lengths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import setting
from lifelong.memory.base import Memory, State
from lifelong.memory.scan import linear_scan
from lifelong.registry import MEMORY


@dataclass
class S5Config:
    """Settings of the ``s5`` core."""

    name: str = setting("s5", "Memory module.", registry="memory")
    d_model: int = setting(128, "Width H of every block (the output width).", low=1)
    state_size: int = setting(128, "HiPPO state size N per layer; conjugate symmetry keeps P = N/2 complex states.",
                              low=2)
    layers: int = setting(2, "Stacked S5 blocks.", low=1)
    norm: bool = setting(True, "LayerNorm before each SSM (pre-norm).")
    dt_min: float = setting(1e-3, "Smallest initial step size (log-uniform draw per state).", low=0.0, low_open=True)
    dt_max: float = setting(1e-1, "Largest initial step size (log-uniform draw per state).", low=0.0, low_open=True)
    clip_eigs: bool = setting(True, "Clamp Re(Lambda) <= -1e-4 so that every mode decays.")

    def validate(self, prefix: str) -> None:
        """Reject an odd state size and an inverted step range."""
        from lifelong.config import ConfigError

        if self.state_size % 2:
            raise ConfigError(f"{prefix}state_size: {self.state_size} is odd (allowed: even ints >= 2; "
                              f"conjugate pairs keep state_size/2 complex states)")
        if self.dt_min > self.dt_max:
            raise ConfigError(f"{prefix}dt_min: {self.dt_min} exceeds dt_max={self.dt_max} (allowed: dt_min <= dt_max)")


def hippo_legs_normal(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``[n]`` (complex128) and eigenvectors ``[n, n]`` of the normal part of HiPPO-LegS.

    HiPPO-LegS is ``A = -(tril(p p^T) - diag(0..n-1))`` with ``p_k = sqrt(2k+1)``; adding the
    rank-one ``q q^T`` (``q_k = sqrt(k + 1/2)``) gives ``S = -1/2 I + skew-symmetric``. Its
    eigenvalues are ``-1/2 + i w`` with ``w`` the (real, ascending, +-paired) eigenvalues of
    the Hermitian ``-i * skew``.
    """
    k = torch.arange(n, dtype=torch.float64)
    p = torch.sqrt(2 * k + 1)
    hippo = -(torch.tril(p[:, None] * p[None, :]) - torch.diag(k))
    q = torch.sqrt(k + 0.5)
    normal = hippo + q[:, None] * q[None, :]
    real = normal.diagonal().mean()
    skew = normal - torch.diag(normal.diagonal())
    imag, vectors = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    return torch.complex(real.expand(n), imag), vectors


def lecun_normal_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """LeCun normal as JAX draws it: truncated at 2 sigma, rescaled to variance 1/fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of a unit normal truncated to [-2, 2]
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class S5SSM(nn.Module):
    """One S5 SSM: H inputs, P = N/2 complex diagonal states, H outputs, resettable."""

    def __init__(self, d_model: int, state_size: int, dt_min: float, dt_max: float, clip_eigs: bool) -> None:
        super().__init__()
        n, self.states = state_size, state_size // 2
        eigenvalues, vectors = hippo_legs_normal(n)
        lam, v = eigenvalues[: self.states], vectors[:, : self.states]  # conjugate pairs: keep one of each
        b = lecun_normal_(torch.empty(n, d_model, dtype=torch.float64), fan_in=n)
        b_tilde = v.conj().T @ b.to(torch.complex128)  # V^-1 B (V is unitary)
        c = torch.complex(lecun_normal_(torch.empty(d_model, n, dtype=torch.float64), fan_in=n),
                          lecun_normal_(torch.empty(d_model, n, dtype=torch.float64), fan_in=n))
        c_tilde = c @ v
        self.clip_eigs = clip_eigs
        self.lambda_re = nn.Parameter(lam.real.float())
        self.lambda_im = nn.Parameter(lam.imag.float())
        # Complex matrices are stored as real (re, im) pairs in the last dim, as in the reference, so that
        # optimisers, clipping and checkpoints see real tensors: B~ [P, H, 2], C~ [H, P, 2].
        self.b_tilde = nn.Parameter(torch.view_as_real(b_tilde).float())
        self.c_tilde = nn.Parameter(torch.view_as_real(c_tilde).float())
        self.d = nn.Parameter(torch.randn(d_model))
        # 2 Re(C~ x) = sum_p 2 Re(C~) Re(x) - 2 Im(C~) Im(x): the output GEMM's weight is C~ times (2, -2).
        self.register_buffer("out_scale", torch.tensor([2.0, -2.0]), persistent=False)
        self.log_step = nn.Parameter(torch.empty(self.states).uniform_(math.log(dt_min), math.log(dt_max)))

    def eigenvalues(self) -> torch.Tensor:
        """Continuous-time ``Lambda [P]`` (real part clamped if ``clip_eigs``)."""
        real = self.lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.lambda_re
        return torch.complex(real, self.lambda_im)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-order hold: ``Lambda_bar = exp(Lambda dt)``, ``B_bar = (Lambda_bar - 1) / Lambda * B~``."""
        lam = self.eigenvalues()
        lam_bar = torch.exp(lam * self.log_step.exp())
        b_bar = ((lam_bar - 1) / lam)[:, None] * torch.view_as_complex(self.b_tilde)
        return lam_bar, b_bar

    def forward(self, u: torch.Tensor, h0: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``[T, B, H]`` and last state ``[B, P]`` for inputs ``u [T, B, H]``; ``keep = 1 - is_first``."""
        lam_bar, b_bar = self.discretize()
        # Complex products as single real GEMMs: rows 2p, 2p+1 of w_in give Re, Im of (B_bar u)_p.
        w_in = torch.view_as_real(b_bar).transpose(1, 2).reshape(2 * self.states, -1)
        bu = torch.view_as_complex(F.linear(u, w_in).unflatten(-1, (self.states, 2)))
        x = linear_scan(lam_bar * keep, bu, h0)
        w_out = (self.c_tilde * self.out_scale).flatten(1)
        y = torch.addcmul(F.linear(torch.view_as_real(x).flatten(-2), w_out), u, self.d)
        return y, x[-1]


class S5Block(nn.Module):
    """``x -> [LayerNorm] -> SSM -> GELU -> W1 g * sigmoid(W2 g) -> + x``."""

    def __init__(self, cfg: S5Config) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm else nn.Identity()
        self.ssm = S5SSM(cfg.d_model, cfg.state_size, cfg.dt_min, cfg.dt_max, cfg.clip_eigs)
        self.glu = nn.Linear(cfg.d_model, 2 * cfg.d_model)  # W1 and W2 as one GEMM

    def forward(self, x: torch.Tensor, h0: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block output and the SSM's last state."""
        g, h = self.ssm(self.norm(x), h0, keep)
        value, gate = self.glu(F.gelu(g, approximate="tanh")).chunk(2, dim=-1)
        return torch.addcmul(x, value, torch.sigmoid(gate)), h


class S5Memory(Memory):
    """Input projection then stacked S5 blocks; state complex ``[layers, B, P]``, env dim 1."""

    state_batch_dim = 1

    def __init__(self, input_dim: int, cfg: S5Config) -> None:
        super().__init__()
        self.encoder = nn.Linear(input_dim, cfg.d_model)
        self.blocks = nn.ModuleList(S5Block(cfg) for _ in range(cfg.layers))
        self.states = cfg.state_size // 2
        self.output_dim = cfg.d_model

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Zeros, complex ``[layers, B, P]``."""
        dtype = torch.promote_types(self.encoder.weight.dtype, torch.complex64)
        return torch.zeros(len(self.blocks), batch_size, self.states, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, state: State, is_first: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Run the blocks over ``x [T, B, D]``; a reset zeroes every layer's state before ``x[t]``."""
        keep = (~is_first).to(x.dtype).unsqueeze(-1)
        z = self.encoder(x)
        last = []
        for layer, block in enumerate(self.blocks):
            z, h = block(z, state[layer], keep)
            last.append(h)
        return z, torch.stack(last)


@MEMORY.register("s5", config=S5Config, summary="Stacked S5 SSM blocks on the resettable parallel scan.")
def make_s5(input_dim: int, cfg: S5Config) -> S5Memory:
    """Build the ``s5`` core."""
    return S5Memory(input_dim, cfg)
