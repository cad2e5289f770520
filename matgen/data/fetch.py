"""Fetch a registered data set into the data root from a mirror: a URL or a local directory.

A mirror has the data root's layout (``<mirror>/mp_20/test.csv.gz``, …). Every file is written
to a temporary name, checked against the registry's size and sha256, and only then moved into
place, so an interrupted or corrupt download never leaves a file that looks valid. Files already
present and valid are not fetched again. The upstream originals are listed as ``source`` in the
registry (``matgen data info NAME``); they are in their original formats, not this layout.
"""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from matgen.data.catalog import FileSpec, get_spec
from matgen.data.errors import DataError
from matgen.data.integrity import verify_file
from matgen.data.root import data_root

__all__ = ["fetch_dataset"]


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file", "ftp")


def fetch_dataset(
    name: str, source: str | Path, *, root: str | Path | None = None, timeout: float = 60.0
) -> list[Path]:
    """Fetch every file of data set ``name`` from ``source`` into ``root``.

    Args:
        name: registry name.
        source: base URL or local directory laid out like the data root.
        root: destination data root (default :func:`matgen.data.root.data_root`).
        timeout: seconds to wait on a network read.

    Returns:
        The paths of the data set's files under ``root``.

    Raises:
        DataError: naming the file and where it came from when it is missing there or fails
            verification.
    """
    spec = get_spec(name)
    base = Path(root) if root is not None else data_root()
    files: dict[str, FileSpec] = {f.path: f for f in (*spec.files, *spec.extra)}
    out = []
    for rel, fs in files.items():
        dest = base / rel
        out.append(dest)
        try:
            verify_file(dest, fs.sha256, size=fs.size)
            continue
        except DataError:
            pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        origin = _copy(str(source), rel, tmp, timeout)
        try:
            verify_file(tmp, fs.sha256, size=fs.size)
        except DataError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"fetched from {origin}: {exc.reason}", path=dest) from None
        tmp.replace(dest)
    return out


def _copy(source: str, rel: str, tmp: Path, timeout: float) -> str:
    if _is_url(source):
        url = source.rstrip("/") + "/" + urllib.parse.quote(rel)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"download failed: {exc}", path=url) from None
        return url
    path = Path(source).expanduser() / rel
    if not path.is_file():
        raise DataError("not found in the mirror directory", path=path)
    shutil.copyfile(path, tmp)
    return str(path)
