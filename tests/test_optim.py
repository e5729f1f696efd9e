"""FlatAdam equals torch.optim.Adam after clip_grad_norm_, and round-trips its state."""

import pytest
import torch
from torch import nn

from lifelong import optim
from lifelong.optim import FlatAdam


def make_pair():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    b = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("max_norm", [None, 0.05, 100.0])
def test_matches_torch_adam_with_clipping(max_norm, fused, monkeypatch):
    monkeypatch.setattr(optim, "_FUSED", fused and optim._FUSED)  # torch's fused kernel and the plain ops
    ref, flat = make_pair()
    torch_opt = torch.optim.Adam(ref.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-5)
    flat_opt = FlatAdam(flat.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-5, max_grad_norm=max_norm)
    gen = torch.Generator().manual_seed(1)
    for step in range(25):
        x = torch.randn(32, 5, generator=gen)
        y = torch.randn(32, 3, generator=gen) * 5
        for model, opt in ((ref, torch_opt), (flat, flat_opt)):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
        if max_norm is not None:
            nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
        torch_opt.step()
        norm = flat_opt.step()
        assert norm > 0
        if step == 10:  # learning-rate changes apply like a param-group edit
            for group in torch_opt.param_groups:
                group["lr"] = 1e-3
            flat_opt.lr = 1e-3
    for p_ref, p_flat in zip(ref.parameters(), flat.parameters()):
        torch.testing.assert_close(p_flat, p_ref, rtol=1e-5, atol=1e-6)
    # parameters are views into the flat buffer, and stay so after a state-dict load
    flat.load_state_dict(ref.state_dict())
    assert all(p.data_ptr() - flat_opt.flat.data_ptr() in range(flat_opt.flat.numel() * 4) for p in flat.parameters())


def test_state_round_trip_and_shape_check():
    _, model = make_pair()
    opt = FlatAdam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    state = opt.state_dict()
    other = FlatAdam(make_pair()[1].parameters(), lr=1e-3)
    other.load_state_dict(state)
    assert other.steps == 1
    torch.testing.assert_close(other.exp_avg, opt.exp_avg)
    small = FlatAdam(nn.Linear(2, 2).parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="optimizer state holds"):
        small.load_state_dict(state)


def test_refuses_mixed_dtypes():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    with pytest.raises(ValueError, match="one real floating dtype"):
        FlatAdam(params, lr=1e-3)
