"""Order-preserving parallel map over processes, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["process_map"]


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(item) for item in chunk]


def process_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "",
    unit: str = "it",
) -> list[R]:
    """``[fn(x) for x in items]`` computed in ``workers`` processes (default: all CPUs), in order.

    ``fn`` must be a module-level function. Workers start with ``fork`` where the platform has it
    (no ``if __name__ == "__main__"`` guard needed in user scripts); ``fn`` must not use torch.
    ``workers=1`` runs in this process.
    """
    from functools import partial

    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    out: list[R] = []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                out.extend(_run_chunk(fn, chunk))
                bar.update(len(chunk))
            return out
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for part in pool.map(partial(_run_chunk, fn), chunks):
                out.extend(part)
                bar.update(len(part))
    return out
