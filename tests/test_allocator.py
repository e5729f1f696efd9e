"""The allocator tuning of ``run.keep_freed_memory``: a training step stops page-faulting its tensors in."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# A training step whose activations (8192 x 512 floats, 16 MiB each) are far above glibc's
# default mmap threshold; prints the minor page faults of 10 steps after a warm-up.
_STEPS = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "tuned":
        from lifelong.allocator import keep_freed_memory
        assert keep_freed_memory()
    import torch
    from torch import nn
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 512), nn.SiLU(), nn.Linear(512, 512), nn.SiLU(), nn.Linear(512, 1))
    x = torch.randn(8192, 64)
    def step():
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
    for _ in range(5):
        step()
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults))
""")


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_stops_page_faults_in_steady_state():
    """Each step allocates about eight 16 MiB tensors (4096 pages each). Tuned, ten steps fault in
    fewer than three of those 80 (usually none); with glibc's defaults the same ten steps
    fault 24,000-41,000 pages on the CI machine (six to ten activations). One tuned process in
    many has faulted four activations' worth (the heap grew once more after the warm-up), so
    the best of two processes is compared: without the tuning both fault every step."""
    assert min(_faults("tuned"), _faults("tuned")) < 3 * 4096


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    """Other C libraries are left alone and the call says so."""
    from lifelong import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False
