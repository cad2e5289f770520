"""Freed memory kept for reuse (glibc's allocator settings around a long CPU computation)."""

from __future__ import annotations

import resource

import pytest
import torch

from matgen.data import allocator
from matgen.data.allocator import reuse_freed_memory

glibc = pytest.mark.skipif(allocator._GLIBC is None, reason="not glibc: nothing to set")


def _step() -> None:
    x = torch.ones(5 * 2**20, dtype=torch.float64)  # 40 MiB temporaries, written once
    (x * 2.0).sum()


def _faults_of_steps(steps: int = 12) -> int:
    """Minor page faults of a model-step-like loop after its first step (which may grow the
    heap)."""
    _step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        _step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_reused_memory_takes_no_page_faults_after_the_first_step():
    default = _faults_of_steps()
    with reuse_freed_memory() as active:
        assert active
        kept = _faults_of_steps()
    # by default each 40 MiB block is a fresh mapping of 10,240 pages, two per step; kept, the
    # heap may still grow by a block now and then while it settles (a small block on its top)
    assert default > 12 * 2 * 10_000
    assert kept < default / 4


@glibc
def test_settings_nest_and_are_undone_on_leaving(monkeypatch):
    calls = []

    class Recorder:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(allocator, "_GLIBC", Recorder())
    with reuse_freed_memory():
        with reuse_freed_memory():
            pass
        assert calls == [(allocator._M_MMAP_MAX, 0), (allocator._M_TRIM_THRESHOLD, 2**31 - 1)]
    assert calls[2:] == [
        (allocator._M_MMAP_MAX, 65536),
        (allocator._M_TRIM_THRESHOLD, 64 * 2**20),
        ("trim", 0),
    ]
    calls.clear()
    with pytest.raises(RuntimeError), reuse_freed_memory():
        raise RuntimeError("a failing step")
    assert calls[-1] == ("trim", 0)  # undone after an error too
    calls.clear()
    with reuse_freed_memory(enabled=False) as active:
        assert not active
    monkeypatch.setenv("MATGEN_REUSE_MEMORY", "0")
    with reuse_freed_memory() as active:
        assert not active
    assert calls == []


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_GLIBC", None)
    with reuse_freed_memory() as active:
        assert not active
