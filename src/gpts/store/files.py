"""The store's copies of knowledge files, evaluation sets and adapters: each content stored once, under its SHA-256
(files/ab/abcdef...), so that versions and GPTs that share a file share its copy, and a GPT keeps working when
the file it was built from changes or goes away."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path

from gpts.errors import GptsError
from gpts.fileio import FILE_MODE
from gpts.store.db import store_dir

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    except OSError as e:
        raise GptsError(f"Cannot read {path}: {e.strerror or e}.", "Check the file, or leave it out.") from e
    return digest.hexdigest()


def blob_path(sha256: str) -> Path:
    return store_dir() / "files" / sha256[:2] / sha256


def put(path: Path, sha256: str) -> bool:
    """Copy `path` into the store under its hash, unless a copy is there already; says whether it made one. The copy
    appears whole or not at all; the database row that makes it part of a GPT is written later, in the GPT's
    transaction."""
    target = blob_path(sha256)
    if target.is_file():
        return False
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{sha256[:16]}.", suffix=".tmp", dir=target.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            while block := src.read(CHUNK):
                out.write(block)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise GptsError(f"Cannot copy {path} into the store ({target.parent}): {e.strerror or e}.",
                        "Check the free disk space and that GPTS_HOME is writable.") from e
    return True


def remove_unused(conn: sqlite3.Connection) -> list[str]:
    """Delete the rows of files and chunk sets that no version uses any more (in the caller's transaction); returns
    the hashes whose copies can be deleted once it commits."""
    conn.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT c.id FROM chunks c WHERE c.set_id NOT IN "
                 "(SELECT set_id FROM version_files WHERE set_id IS NOT NULL))")
    conn.execute("DELETE FROM chunk_sets WHERE id NOT IN (SELECT set_id FROM version_files WHERE set_id IS NOT NULL)")
    unused = [r[0] for r in conn.execute("SELECT sha256 FROM files WHERE sha256 NOT IN "
                                         "(SELECT sha256 FROM version_files)")]
    conn.executemany("DELETE FROM files WHERE sha256 = ?", [(h,) for h in unused])
    return unused


def delete_copies(hashes: list[str]) -> None:
    for sha256 in hashes:
        blob_path(sha256).unlink(missing_ok=True)
