"""File integrity: checksums, and reading (possibly gzipped) files with errors that name the file."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from pathlib import Path

from matgen.data.errors import DataError

__all__ = ["read_bytes", "sha256_file", "text_stream", "verify_file"]

_GZIP_MAGIC = b"\x1f\x8b"


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str, *, size: int | None = None) -> None:
    """Check that ``path`` exists and has the expected size and checksum.

    Raises:
        DataError: naming the file when it is missing, empty, of the wrong size or checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found; fetch the data set or set MATGEN_DATA", path=path)
    actual_size = path.stat().st_size
    if actual_size == 0:
        raise DataError("file is empty", path=path)
    if size is not None and actual_size != size:
        raise DataError(
            f"size is {actual_size} bytes, expected {size}: the file is truncated or not the "
            "registered version; fetch it again",
            path=path,
        )
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(
            f"checksum mismatch: sha256 {actual}, expected {sha256}; the file is corrupt or not "
            "the registered version; fetch it again",
            path=path,
        )


def read_bytes(path: str | Path) -> bytes:
    """Return the file's bytes, gunzipped when the file is gzip-compressed.

    Raises:
        DataError: naming the file when it is missing, empty, or a truncated or corrupt gzip.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    if not raw:
        raise DataError("file is empty", path=path)
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        data = gzip.decompress(raw)
    except EOFError:
        raise DataError("truncated gzip: the compressed stream ends early", path=path) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"corrupt gzip: {exc}", path=path) from None
    if not data:
        raise DataError("file is empty after decompression", path=path)
    return data


def text_stream(path: str | Path, *, encoding: str = "utf-8") -> io.StringIO:
    """Return the whole (decompressed) file as an in-memory text stream."""
    data = read_bytes(path)
    try:
        return io.StringIO(data.decode(encoding))
    except UnicodeDecodeError as exc:
        raise DataError(f"not {encoding} text (byte {exc.start})", path=path) from None
