"""Work ranges of the compiled kernels' thread pool."""

from __future__ import annotations

import itertools
import threading

import pytest
import torch

from matgen.data.threads import parallel_ranges, run_ranges


@pytest.fixture
def three_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(previous)


def test_ranges_cover_everything_once_on_step_boundaries(three_threads):
    ranges = parallel_ranges(1000, grain=10, step=2)
    assert len(ranges) == 3
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(lo % 2 == 0 for lo, _ in ranges)


def test_small_or_empty_work_stays_on_one_range(three_threads):
    assert parallel_ranges(25, grain=10) == [(0, 12), (12, 25)]
    assert parallel_ranges(5, grain=10) == [(0, 5)]
    assert parallel_ranges(0, grain=10) == [(0, 0)]


def test_every_range_runs_and_the_first_on_the_calling_thread(three_threads):
    seen = {}
    run_ranges(
        lambda k, lo, hi: seen.__setitem__(k, (lo, hi, threading.current_thread())),
        parallel_ranges(90, grain=10),
    )
    assert sorted(seen) == [0, 1, 2]
    assert seen[0][2] is threading.current_thread()
    assert sum(hi - lo for lo, hi, _ in seen.values()) == 90


def test_run_ranges_waits_for_every_range_before_raising():
    import time

    finished = []

    def fn(k, lo, hi):
        if k == 0:
            raise RuntimeError("range 0 failed")
        time.sleep(0.2)
        finished.append(k)

    with pytest.raises(RuntimeError, match="range 0 failed"):
        run_ranges(fn, [(0, 1), (1, 2), (2, 3)])
    assert sorted(finished) == [1, 2]  # no range left running after the error


def test_an_interrupt_of_the_first_range_waits_for_the_others():
    import time

    finished = []

    def fn(k, lo, hi):
        if k == 0:
            raise KeyboardInterrupt
        time.sleep(0.2)
        finished.append(k)

    with pytest.raises(KeyboardInterrupt):
        run_ranges(fn, [(0, 1), (1, 2), (2, 3)])
    assert sorted(finished) == [1, 2]
