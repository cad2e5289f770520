"""One thread pool per process for compiled kernels that release the GIL (numba ``nogil``).

Kernels split their work into contiguous ranges and run them on this pool; each range writes
its own part of the output (or its own buffer), so no two threads write the same memory.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["parallel_ranges", "run_ranges", "thread_pool"]

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of this process with at least ``workers`` threads (a forked child gets its
    own)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < workers:
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mg"))
        return _POOL[1]


def parallel_ranges(n: int, *, grain: int, step: int = 1) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``0 .. n``, one per thread of ``torch.get_num_threads()``
    but none shorter than about ``grain`` items; boundaries are multiples of ``step``. At least
    one range, ``(0, 0)`` for ``n = 0``."""
    parts = max(1, min(torch.get_num_threads(), n // max(grain, 1)))
    inner = [round(float(b) / step) * step for b in np.linspace(0, n, parts + 1)[1:-1]]
    return [(lo, hi) for lo, hi in itertools.pairwise([0, *inner, n]) if hi > lo] or [(0, n)]


def run_ranges(fn: Callable[[int, int, int], None], ranges: list[tuple[int, int]]) -> None:
    """``fn(k, lo, hi)`` for every range ``k``: the first on this thread, the others on the
    pool. An error of any range (or a ``KeyboardInterrupt`` during the first) is raised once
    every range has finished (none is left running on buffers or state its caller is about to
    release)."""
    if len(ranges) == 1:
        fn(0, *ranges[0])
        return
    pool = thread_pool(len(ranges) - 1)
    futures = [pool.submit(fn, k, lo, hi) for k, (lo, hi) in enumerate(ranges) if k > 0]
    first: BaseException | None = None
    try:
        fn(0, *ranges[0])
    except BaseException as exc:  # KeyboardInterrupt too: the pool's ranges finish first
        first = exc
    for future in futures:
        try:
            future.result()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
