"""Freed memory kept for reuse (glibc's allocator settings around a long CPU computation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from matgen.data import allocator
from matgen.data.allocator import reuse_freed_memory

glibc = pytest.mark.skipif(allocator._GLIBC is None, reason="not glibc: nothing to set")


@pytest.fixture(autouse=True)
def _not_turned_off(monkeypatch):
    monkeypatch.delenv("MATGEN_REUSE_MEMORY", raising=False)


# Measured in a fresh process: what the allocator does by default depends on what the process
# allocated before (a heap left large by an earlier test serves big blocks without a mapping).
_MEASURE = r"""
import ctypes, json, resource
import torch
from matgen.data import allocator
from matgen.data.allocator import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = allocator._GLIBC.mallinfo2
mallinfo2.restype = MallInfo2
SIZE = 40 * 2**20

def step():
    x = torch.ones(SIZE // 8, dtype=torch.float64)  # 40 MiB temporaries, written once
    (x * 2.0).sum()

def faults_of_steps(steps=12):  # after a first step, which may grow the heap
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def block():  # bytes of a new 40 MiB block in a mapping of its own; freed bytes the heap keeps
    before = mallinfo2()
    x = torch.ones(SIZE // 8, dtype=torch.float64)
    mapped = mallinfo2().hblkhd - before.hblkhd
    del x
    return mapped, mallinfo2().fordblks - before.fordblks

out = {"default_mapped": block()[0], "default_faults": faults_of_steps()}
with reuse_freed_memory() as active:
    out["active"] = active
    out["kept_mapped"], out["kept_free"] = block()
    out["kept_faults"] = faults_of_steps()
print(json.dumps(out))
"""


@glibc
def test_blocks_come_from_the_heap_are_kept_and_take_no_page_faults():
    if not hasattr(allocator._GLIBC, "mallinfo2"):
        pytest.skip("glibc before 2.33: no mallinfo2 to read the allocator's state")
    env = {k: v for k, v in os.environ.items() if k != "MATGEN_REUSE_MEMORY"}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, env=env, check=True
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    size = 40 * 2**20
    assert out["active"]
    assert out["default_mapped"] >= size  # by default: a mapping of its own, unmapped when freed
    assert out["kept_mapped"] < size and out["kept_free"] > 0.9 * size  # from the heap, kept
    # by default each step faults its two blocks in page by page (10,240 faults each, or 20
    # with transparent huge pages everywhere); kept, the heap may still grow by a block now and
    # then while it settles (a small block on its top)
    assert out["kept_faults"] < out["default_faults"] / 4


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
