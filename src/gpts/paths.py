"""Where gpts keeps its files: one user directory, overridable so that tests never touch `~`."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$GPTS_HOME`, else `~/.gpts`."""
    return Path(os.environ.get("GPTS_HOME") or Path.home() / ".gpts")


def cache_dir() -> Path:
    """Converted weights and downloads; safe to delete, rebuilt on demand."""
    return home() / "cache"
