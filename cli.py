"""Launcher for the matgen command line: `python cli.py ...` is `matgen ...`."""

from __future__ import annotations

import sys

from matgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
