"""The one error type the data layer raises for bad input."""

from __future__ import annotations

from os import PathLike


class DataError(ValueError):
    """Bad input data, with where it was found.

    The message always names the file and, where it applies, the row (0-based, data rows only,
    header excluded) and the item's id, followed by what is wrong.

    Attributes:
        path: the file the bad data came from, if any.
        row: 0-based data row within that file, if it applies.
        item: an identifier of the item (material id, structure index), if known.
        reason: what is wrong, without the location.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | PathLike[str] | None = None,
        row: int | None = None,
        item: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        self.item = item
        self.reason = reason
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if item is not None:
            where.append(f"item {item!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)
