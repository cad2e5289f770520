"""process_map: order, and the hard per-item time limit that stops workers stuck in any code."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from matgen.data.parallel import process_map


def _work(x: int) -> int:
    if x == -1:  # stuck where no Python-level signal handler runs: only killing the process helps
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
        time.sleep(3600)
    if x == -2:  # dies in "compiled code"
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def _lost(x: int, error: BaseException) -> str:
    return f"{x}:{type(error).__name__}"


@pytest.mark.parametrize("workers", [1, 2])
def test_map_is_ordered_with_and_without_a_limit(workers):
    items = list(range(23))
    expected = [x * x for x in items]
    assert process_map(_work, items, workers=workers, chunk_size=5) == expected
    assert process_map(_work, items, workers=workers, timeout=30.0, fallback=_lost) == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_stuck_and_crashed_items_are_replaced_by_the_fallback(workers):
    # the stuck item sleeps an hour: finishing at all means its worker was killed and replaced
    out = process_map(_work, [3, -1, 4, -2, 5, 6], workers=workers, timeout=1.0, fallback=_lost)
    assert out == [9, "-1:TimeoutError", 16, "-2:ProcessExpired", 25, 36]


def test_a_stuck_item_without_fallback_raises():
    with pytest.raises(FutureTimeout):
        process_map(_work, [1, -1], workers=2, timeout=0.5)


_LOADED: list[str] = []


def _slow_setup() -> None:
    time.sleep(2.0)  # longer than the limit below: must not count against the first item
    _LOADED.append("ready")


def _needs_setup(x: int) -> int:
    assert _LOADED == ["ready"], "the initializer did not run once in this worker"
    return x + 1


@pytest.mark.parametrize("timeout", [None, 1.0])
def test_the_initializer_runs_once_per_worker_outside_the_limit(timeout):
    out = process_map(
        _needs_setup,
        list(range(6)),
        workers=2,
        chunk_size=2,
        timeout=timeout,
        fallback=_lost,
        initializer=_slow_setup,
    )
    assert out == [1, 2, 3, 4, 5, 6]
