"""Freed memory kept for reuse during a long computation on the CPU (glibc's allocator).

A batched model call on the CPU allocates and frees tens of megabytes of temporaries: edge
features, their gradients, kernel outputs. glibc's ``malloc`` serves blocks above its mmap
threshold (which grows to at most 32 MiB) from fresh mappings and unmaps them when freed, and it
returns freed memory at the top of the heap to the system once more than the trim threshold is
free. Each step of a batched relaxation then touches new pages: in float64 on one thread, the
100 benchmark structures of ``benchmarks/bench_relax.py`` take 1.2 million page faults per
relaxation (about 20,000 per FIRE step) and 4 of their 28 seconds in the kernel.

Within :func:`reuse_freed_memory`, ``malloc`` serves every block from its heap and keeps what is
freed (``M_MMAP_MAX = 0``, a 2 GiB trim threshold): after the first step, the same memory serves
every later one, with no page fault. On leaving, the defaults come back (the mmap threshold keeps
the value glibc had grown it to; the trim threshold becomes 64 MiB, twice the largest such
value) and ``malloc_trim(0)`` returns the kept memory to the system. The settings hold for the
whole process while any caller is inside (they nest); threads' own arenas still map blocks over
64 MiB. Elsewhere than on glibc (macOS, Windows, musl) it does nothing. ``MATGEN_REUSE_MEMORY=0``
turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["reuse_freed_memory"]

# mallopt parameters and glibc's defaults (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_KEEP = 2**31 - 1  # mallopt takes an int
_TRIM_AFTER = 64 * 2**20

_LOCK = threading.Lock()
_DEPTH = 0


def _load_glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc, not musl: its mallopt does nothing)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_GLIBC = _load_glibc()


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory for reuse while inside (see the module's notes); yields whether the
    allocator's settings are in effect (``False`` off glibc, when ``enabled`` is false or
    ``MATGEN_REUSE_MEMORY=0``)."""
    global _DEPTH
    libc = _GLIBC if enabled and os.environ.get("MATGEN_REUSE_MEMORY", "1") != "0" else None
    if libc is None:
        yield False
        return
    with _LOCK:
        _DEPTH += 1
        if _DEPTH == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)
    try:
        yield True
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                libc.malloc_trim(0)
