"""Where relaxations run: in this process (:class:`LocalExecutor`) or on a Ray cluster
(:class:`RayExecutor`).

An executor takes the jobs (candidate id and structure) and calls ``on_result(k, result)`` in the
calling process as each job ``k`` finishes, so results reach the store one by one whatever runs
them.

Ray: the jobs, sorted by candidate id, are cut into shards of ``shard_size``; the same pending
jobs always give the same shards, and a rerun never sees finished ids, so finished shards are
skipped. One actor per worker (one GPU each when the device is CUDA, otherwise one CPU slot)
loads the model once and relaxes shard after shard with :func:`matgen.relax.relax_batched`; the
driver keeps two shards queued per actor and hands each finished shard's results to
``on_result`` in job order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from ase import Atoms

    from matgen.relax.fire import RelaxResult

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RelaxJob",
    "RelaxSettings",
    "shard_jobs",
]


@dataclass(frozen=True)
class RelaxJob:
    """One structure to relax and the candidate it belongs to."""

    candidate_id: str
    atoms: Atoms


@dataclass(frozen=True)
class RelaxSettings:
    """Arguments of :func:`matgen.relax.relax_batched`: force threshold ``fmax`` (eV/Å), step
    limit, cell relaxation, memory budget ``max_atoms``, device and dtype name."""

    fmax: float = 0.05
    max_steps: int = 500
    relax_cell: bool = True
    max_atoms: int = 2048
    device: str = "cpu"
    dtype: str = "float64"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    def relax(
        self,
        model: torch.nn.Module,
        structures: Sequence[Atoms],
        on_result: Callable[[int, RelaxResult], None] | None = None,
    ) -> list[RelaxResult]:
        from matgen.relax import relax_batched

        return relax_batched(
            model,
            list(structures),
            fmax=self.fmax,
            max_steps=self.max_steps,
            relax_cell=self.relax_cell,
            max_atoms=self.max_atoms,
            device=self.device,
            dtype=self.torch_dtype,
            on_result=on_result,
        )


ResultCallback = Callable[[int, "RelaxResult"], None]


class Executor(Protocol):
    """Relaxes jobs, reporting each as it finishes."""

    name: str

    def run(self, jobs: Sequence[RelaxJob], on_result: ResultCallback) -> None: ...


class LocalExecutor:
    """All jobs in this process, one continuous batch."""

    name = "local"

    def __init__(self, model: torch.nn.Module, settings: RelaxSettings) -> None:
        self.model = model
        self.settings = settings

    def run(self, jobs: Sequence[RelaxJob], on_result: ResultCallback) -> None:
        if jobs:
            self.settings.relax(self.model, [job.atoms for job in jobs], on_result)


def shard_jobs(jobs: Sequence[RelaxJob], shard_size: int) -> list[list[int]]:
    """Job indices in shards of ``shard_size``, by sorted candidate id."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, not {shard_size}")
    order = sorted(range(len(jobs)), key=lambda k: jobs[k].candidate_id)
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


class _RelaxWorker:
    """A Ray actor's state: the model, loaded once."""

    def __init__(self, potential: str, settings: RelaxSettings, threads: int) -> None:
        import torch

        from matgen.mlff.checkpoint import load_model

        torch.set_num_threads(threads)
        self.settings = settings
        self.model = load_model(potential, device=settings.device, dtype=settings.torch_dtype)

    def relax(self, structures: list[Atoms]) -> list[RelaxResult]:
        return self.settings.relax(self.model, structures)


class RayExecutor:
    """Shards on a Ray cluster, one actor per worker keeping the model loaded.

    Args:
        potential: shipped model name or checkpoint path (visible to every worker).
        settings: relaxation settings.
        workers: actors (each takes one GPU when ``settings.device`` is CUDA, else one CPU).
        address: Ray cluster to join; None starts a local instance with ``workers`` CPUs when
            none is running (and stops it afterwards).
        shard_size: structures per shard.
    """

    name = "ray"

    def __init__(
        self,
        potential: str,
        settings: RelaxSettings,
        *,
        workers: int = 2,
        address: str | None = None,
        shard_size: int = 16,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.potential = potential
        self.settings = settings
        self.workers = workers
        self.address = address
        self.shard_size = shard_size
        self.shards_done: list[int] = [0] * workers  # shards finished by each actor, last run

    def run(self, jobs: Sequence[RelaxJob], on_result: ResultCallback) -> None:
        if not jobs:
            return
        try:
            import ray
        except ImportError:
            from matgen.data.errors import DataError

            raise DataError("--executor ray needs Ray: pip install 'matgen[ray]'") from None
        started = not ray.is_initialized()
        if started:
            ray.init(**self._init_arguments())
        actors: list[Any] = []
        try:
            gpu = self.settings.device.startswith("cuda")
            worker = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)(_RelaxWorker)
            actors = [worker.remote(self.potential, self.settings, 1) for _ in range(self.workers)]
            self._drive(ray, actors, jobs, on_result)
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _init_arguments(self) -> dict[str, Any]:
        if self.address is not None:
            return {"address": self.address, "log_to_driver": False}
        return {
            "num_cpus": self.workers,
            "include_dashboard": False,
            "log_to_driver": False,
            "object_store_memory": 200 * 1024**2,
        }

    def _drive(
        self, ray: Any, actors: list[Any], jobs: Sequence[RelaxJob], on_result: ResultCallback
    ) -> None:
        shards = shard_jobs(jobs, self.shard_size)[::-1]
        in_flight: dict[Any, tuple[int, list[int]]] = {}
        self.shards_done = [0] * len(actors)

        def submit(worker: int) -> None:
            if shards:
                shard = shards.pop()
                future = actors[worker].relax.remote([jobs[k].atoms for k in shard])
                in_flight[future] = (worker, shard)

        for worker in list(range(len(actors))) * 2:  # two shards queued per actor: no idle gap
            submit(worker)
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            worker, shard = in_flight.pop(done[0])
            results = ray.get(done[0])
            self.shards_done[worker] += 1
            submit(worker)
            for k, result in zip(shard, results, strict=True):
                on_result(k, result)
