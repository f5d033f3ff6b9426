"""Files uploaded to `gpts serve` for fine-tuning (OpenAI's Files API).

Each is kept as uploads/<id> in the store directory, written whole or not at all, and never at a path made from the
name it came with: that name is only shown. Its name, purpose and size are a row of the store's database. A file
for fine-tuning is checked line by line before it is kept (gpts.finetune_data.check_file), so that a client learns at
once which lines are wrong, not when a job fails later. Jobs keep their results here too ("fine-tune-results").
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from gpts.errors import ConflictError, NotFoundError, naming
from gpts.fileio import temp_dir_beside
from gpts.finetune_data import check_file
from gpts.jobs.common import new_id, page, unix_now
from gpts.store.db import store_dir, transaction

FINE_TUNE = "fine-tune"  # the purpose of a training or validation file, the one purpose clients upload here
RESULTS = "fine-tune-results"  # a job's metrics, as a CSV file
CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    @property
    def path(self) -> Path:
        return upload_path(self.id)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None,
                "expires_at": None}


def upload_path(file_id: str) -> Path:
    return store_dir() / "uploads" / file_id


def _from_row(row: sqlite3.Row) -> Upload:
    return Upload(row["id"], row["filename"], row["purpose"], row["bytes"], row["created_at"])


def add_upload(conn: sqlite3.Connection, source: BinaryIO, filename: str, purpose: str) -> Upload:
    """Keep what `source` holds as a file of `purpose`. A fine-tuning file must pass check_file, whose errors call it
    `filename`; nothing is kept when it fails. (The server limits the size of an upload as it arrives.)"""
    file_id = new_id("file-")
    # Staged under one name for every upload, so that the next upload clears what a killed server left half-written.
    with temp_dir_beside(upload_path("incoming")) as tmp:
        staged = tmp / "upload"
        with open(staged, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        if purpose == FINE_TUNE:
            with naming({staged: filename}):
                check_file(staged)
        size = staged.stat().st_size
        os.replace(staged, upload_path(file_id))
    upload = Upload(file_id, filename, purpose, size, unix_now())
    try:
        with transaction(conn):
            conn.execute("INSERT INTO uploads (id, filename, purpose, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
                         (upload.id, upload.filename, upload.purpose, upload.bytes, upload.created_at))
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    return upload


def get_upload(conn: sqlite3.Connection, file_id: str) -> Upload:
    row = conn.execute("SELECT * FROM uploads WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"No file with id {file_id!r}.", "List the files to see their ids.")
    return _from_row(row)


def list_uploads(conn: sqlite3.Connection, purpose: str | None = None, after: str | None = None,
                 limit: int = 10_000, order: Literal["asc", "desc"] = "desc") -> tuple[list[Upload], bool]:
    """A page of the files (of one purpose, if given), newest first unless `order` is "asc"; and whether more
    follow."""
    where, args = ("purpose = ?", (purpose,)) if purpose else ("", ())
    rows, more = page(conn, "uploads", "file", after, limit, where, args, order)
    return [_from_row(r) for r in rows], more


def delete_upload(conn: sqlite3.Connection, file_id: str) -> None:
    """Remove a file, unless a job that has not ended yet trains on it."""
    with transaction(conn):
        get_upload(conn, file_id)
        job = conn.execute("SELECT id, status FROM fine_tuning_jobs WHERE ? IN (training_file, validation_file) "
                           "AND status IN ('validating_files', 'queued', 'running')", (file_id,)).fetchone()
        if job is not None:
            raise ConflictError(f"{file_id} is a file of the fine-tuning job {job['id']}, which is {job['status']}.",
                                "Wait for the job to end, or cancel it, then delete the file.")
        conn.execute("DELETE FROM uploads WHERE id = ?", (file_id,))
    upload_path(file_id).unlink(missing_ok=True)
