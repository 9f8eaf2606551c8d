"""glibc malloc settings that stop XLA:CPU from page-faulting its working memory every step."""

from __future__ import annotations

import ctypes
import os
import sys


def configure_host_allocator() -> bool:
    """Keep freed host memory in the process instead of handing it back to the OS (glibc only).

    XLA:CPU allocates each step's intermediates (hundreds of MB for the benchmark workload:
    the (B, T, V) logits and their gradient alone are 2 x 65 MB) with malloc and frees them
    at the end of the step. glibc serves blocks above 32 MB with fresh mmap()s and returns
    them with munmap(), and it unmaps per-thread arenas once they are empty, so every step
    page-faults all of that memory in again (~140k minor faults per step measured here,
    each several microseconds inside a VM). One arena, no mmap and no trimming make the
    second step reuse the first step's pages. Call it at process start, before JAX starts
    its threads. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get("ATTENTION_LAB_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # <malloc.h>
        ok = libc.mallopt(m_arena_max, 1) == 1
        ok &= libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
        return bool(ok)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to do
        return False
