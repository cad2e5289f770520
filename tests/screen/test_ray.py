"""Screening through a local two-worker Ray instance gives the store of the local executor."""

from __future__ import annotations

import pytest

from matgen.screen.executors import RayExecutor, RelaxJob, RelaxSettings, shard_jobs
from matgen.screen.pipeline import ScreenSettings, screen
from matgen.screen.store import ScreeningStore

ray = pytest.importorskip("ray", reason="needs Ray: pip install '.[ray]'")

SETTINGS = ScreenSettings(relax=RelaxSettings(fmax=0.05, max_steps=25))


def test_shards_are_deterministic():
    jobs = [RelaxJob(f"id-{k:02d}", None) for k in (5, 3, 9, 1, 7)]
    shards = shard_jobs(jobs, 2)
    assert shards == [[3, 1], [0, 4], [2]]  # by sorted id: 01 03 | 05 07 | 09
    assert shard_jobs(list(reversed(jobs)), 2) == [[4 - k for k in s] for s in shards]
    with pytest.raises(ValueError, match="shard_size"):
        shard_jobs(jobs, 0)


def test_ray_two_workers_equal_the_local_executor(
    tiny_potential, mp20_inputs, fake_hull, assert_same_records, tmp_path
):
    valid = [i for i in range(21) if i != 14]  # test row 14 fails SMACT's validity
    inputs = [mp20_inputs(tmp_path / "candidates.extxyz", valid)]
    kwargs = dict(potential=str(tiny_potential), settings=SETTINGS, hull=fake_hull, progress=False)
    local = ScreeningStore(tmp_path / "local.db")
    expected_report = screen(inputs, local, **kwargs)

    executor = RayExecutor(str(tiny_potential), SETTINGS.relax, workers=2, shard_size=4)
    distributed = ScreeningStore(tmp_path / "ray.db")
    report = screen(inputs, distributed, executor=executor, **kwargs)
    assert expected_report.relaxed == report.relaxed == 20
    assert not ray.is_initialized()  # the local instance it started is stopped
    assert min(executor.shards_done) > 0 and sum(executor.shards_done) == 5  # both actors worked

    assert_same_records(distributed.records(), local.records())
