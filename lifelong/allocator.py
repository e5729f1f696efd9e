"""CPU allocator tuning: keep freed memory in the process instead of handing it back to the OS.

glibc's malloc serves large blocks (above a threshold that starts at 128 KiB) with fresh
``mmap`` calls and returns them with ``munmap`` when freed; it also trims the top of the
heap back to the OS. A training step allocates and frees the same large activation and
gradient tensors every iteration, so each of them is page-faulted in (and zeroed by the
kernel) again at every step: on the 2-core CI machine that made the world model's
training step at T=1024 15-25% slower (``benchmarks/world_model_speed.py``). With the
mmap threshold at glibc's maximum (32 MiB) and trimming off, freed blocks stay in the
heap and the next step reuses them; only blocks above 32 MiB (replay buffers, say) still
come straight from the OS and go back to it. The cost: the process keeps its peak heap
resident, as with jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc rejects an mmap threshold above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit systems.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int parameter takes (2 GiB of free top-of-heap)


def keep_freed_memory() -> bool:
    """Tune glibc malloc to reuse freed memory (see the module docstring); False where libc is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success; either call failing leaves glibc's defaults for that parameter.
    ok = libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES)) == 1
    ok = libc.mallopt(ctypes.c_int(_M_TRIM_THRESHOLD), ctypes.c_int(_NEVER_TRIM)) == 1 and ok
    return ok
