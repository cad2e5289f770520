"""Order-preserving parallel map over processes, with a progress bar and an optional hard time
limit per item."""

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


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def process_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "",
    unit: str = "it",
    timeout: float | None = None,
    fallback: Callable[[T, BaseException], R] | None = None,
    initializer: Callable[[], object] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]`` computed in ``workers`` processes (default: all CPUs), in order.

    ``fn`` must be a module-level function. Workers start with ``fork`` where the platform has it
    (no ``if __name__ == "__main__"`` guard needed in user scripts); ``fn`` must not use torch.
    ``workers=1`` runs in this process.

    ``timeout`` (s) is a hard limit per item: a worker still busy with one item after that long
    is killed and replaced (pebble's process pool), whatever it is doing, compiled code included,
    and the item's result is ``fallback(item, error)`` (``error``: a ``TimeoutError``). A worker
    that dies on an item (a crash in compiled code) gives ``fallback(item, error)`` too. Items
    then go one at a time to the workers, and always run in worker processes, ``workers=1``
    included, since only another process can be stopped. Without ``fallback`` such an item
    raises.

    ``initializer`` runs once in each worker before its first item (in this process when
    ``workers=1`` runs here), outside the time limit: the place for loading what every item needs.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        if timeout is not None and items:
            return _map_with_limit(fn, items, workers, timeout, fallback, initializer, bar)
        from functools import partial

        chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
        out: list[R] = []
        if workers <= 1 or len(chunks) <= 1:
            if initializer is not None and items:
                initializer()
            for chunk in chunks:
                out.extend(_run_chunk(fn, chunk))
                bar.update(len(chunk))
            return out
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=_context(), initializer=initializer
        ) as pool:
            for part in pool.map(partial(_run_chunk, fn), chunks):
                out.extend(part)
                bar.update(len(part))
    return out


def _map_with_limit(fn, items, workers, timeout, fallback, initializer, bar) -> list:
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures import as_completed

    from pebble import ProcessExpired, ProcessPool

    with ProcessPool(
        max_workers=min(workers, len(items)), initializer=initializer, context=_context()
    ) as pool:
        futures = [pool.schedule(fn, args=(item,), timeout=timeout) for item in items]
        for _ in as_completed(futures):
            bar.update(1)
    out = []
    for item, future in zip(items, futures, strict=True):
        try:
            out.append(future.result())
        except (FutureTimeout, ProcessExpired) as error:
            if fallback is None:
                raise
            out.append(fallback(item, error))
    return out
