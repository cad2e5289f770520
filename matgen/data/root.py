"""Where data sets and processed caches live.

The data root is the one place matgen looks for benchmark files: ``$MATGEN_DATA`` when set, else
``../shared/data`` (relative to the working directory, then to the source checkout) when it
exists, else ``~/.cache/matgen/data``. Processed caches go to ``$MATGEN_CACHE`` or
``~/.cache/matgen/processed``.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Return the data root directory (it may not exist yet)."""
    env = os.environ.get("MATGEN_DATA")
    if env:
        return Path(env).expanduser()
    for base in (Path.cwd(), _CHECKOUT):
        shared = (base / ".." / "shared" / "data").resolve()
        if shared.is_dir():
            return shared
    return Path.home() / ".cache" / "matgen" / "data"


def cache_dir() -> Path:
    """Return the directory for processed caches (created on demand by writers)."""
    env = os.environ.get("MATGEN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "matgen" / "processed"
