"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpts.errors import GptsError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (a file or a directory)."""
    path = Path(path)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _cannot_write(path, e) from e
    target = tmp / path.name
    try:
        yield target
        try:
            if path.is_dir() and not path.is_symlink():
                # A directory cannot be renamed over a non-empty one: move the old one aside first.
                old = tmp / ".old"
                os.replace(path, old)
                os.replace(target, path)
            else:
                os.replace(target, path)
        except OSError as e:
            raise _cannot_write(path, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | Path) -> None:
    """Fail at once, before any long work, when `path` can never be written: a file stands where a parent
    directory must go, or the nearest existing parent is read-only."""
    path = Path(path).absolute()
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise GptsError(f"Cannot write {path}: {parent} is a file, not a directory.", "Choose another output path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GptsError(f"Cannot write {path}: the directory {parent} is not writable.",
                        "Choose an output path in a directory you can write to.")


def is_occupied(path: Path) -> bool:
    """Whether `path` is a file or a directory with something in it (an empty directory may be reused)."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _cannot_write(path: Path, e: OSError) -> GptsError:
    return GptsError(f"Cannot write {path}: {e.strerror or e}.",
                     "Choose an output path in a directory you can write to, on a disk with room to spare.")


def read_json(path: str | Path) -> Any:
    """A JSON file's contents; a missing, unreadable or malformed file is a GptsError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptsError(f"Cannot read {path}: {e}.", "The file is damaged or not JSON; replace it with a valid one.") from e


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
