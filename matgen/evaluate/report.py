"""The result of an evaluation: metric values beside every setting that produced them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvaluationReport", "InvalidSample"]


@dataclass(frozen=True)
class InvalidSample:
    """A sample that failed a check: its 0-based position in the input, an id, and why."""

    index: int
    item: str
    reason: str


@dataclass
class EvaluationReport:
    """Metrics of one evaluation run.

    Attributes:
        task: what was evaluated (``crystals``, ``molecules-3d``, ``smiles``).
        metrics: metric name -> value (fractions in [0, 1], distances in their units; None when a
            metric could not be computed, with the reason in ``notes``).
        settings: every setting that changes a published number (tolerances, thresholds,
            denominators, sample counts, seeds, reference sets), printed beside the result.
        counts: sample counts behind the metrics (``n_samples``, ``n_valid``, …).
        invalid: samples that failed validity checks, with reasons.
        notes: free-text remarks (a metric skipped and why).
    """

    task: str
    metrics: dict[str, float | int | None]
    settings: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    invalid: list[InvalidSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the whole report; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def table(self) -> str:
        """A readable terminal table: metrics, then counts, then settings."""
        rows = [(name, _fmt(value)) for name, value in self.metrics.items()]
        rows += [(name, str(value)) for name, value in self.counts.items()]
        width = max((len(r[0]) for r in rows), default=10)
        lines = [f"{self.task} evaluation", "-" * (width + 16)]
        lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
        lines.append("settings:")
        lines += [f"  {key} = {value}" for key, value in self.settings.items()]
        if self.invalid:
            lines.append(
                f"invalid samples: {len(self.invalid)} (first: #{self.invalid[0].index} {self.invalid[0].reason})"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
