"""Screening: deduplication, relaxation, energy above hull, novelty, and the results store."""

from matgen.screen.executors import LocalExecutor, RayExecutor, RelaxSettings
from matgen.screen.export import export_store
from matgen.screen.identity import structure_id
from matgen.screen.novelty import ReferenceSet, load_reference
from matgen.screen.pipeline import ScreenReport, ScreenSettings, make_hull_stage, screen
from matgen.screen.store import ScreeningStore

__all__ = [
    "LocalExecutor",
    "RayExecutor",
    "ReferenceSet",
    "RelaxSettings",
    "ScreenReport",
    "ScreenSettings",
    "ScreeningStore",
    "export_store",
    "load_reference",
    "make_hull_stage",
    "screen",
    "structure_id",
]
