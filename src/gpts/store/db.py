"""The store's SQLite database: one file in the user directory, brought up to date by numbered migrations.

WAL lets readers go on while one process writes; the busy timeout makes a second writer wait for the first instead
of failing with "database is locked"; every write is one transaction (`transaction`), begun IMMEDIATE so that two
writers queue at the start rather than deadlock halfway. A database written by a newer gpts is refused, never
downgraded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpts import paths
from gpts.errors import GptsError

BUSY_TIMEOUT_MS = 60_000

# Each migration runs once, in order, in its own transaction; PRAGMA user_version counts those applied.
# Append new ones; never edit one that has shipped.
MIGRATIONS: list[str] = [
    # 1: GPTs and their versions, knowledge files and chunks, ratings, conversations, evaluations.
    """
    CREATE TABLE gpts (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,             -- the current version
        builtin INTEGER NOT NULL DEFAULT 0,   -- shipped with gpts
        featured INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE versions (
        gpt_id INTEGER NOT NULL REFERENCES gpts(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        spec TEXT NOT NULL,                   -- GptSpec as JSON; knowledge holds the stored names
        created_at TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (gpt_id, number)
    );
    CREATE TABLE files (                      -- content-addressed: files/<sha256[:2]>/<sha256>
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL
    );
    CREATE TABLE chunk_sets (                 -- one file cut one way (tokenizer and chunk sizes)
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL REFERENCES files(sha256),
        chunking TEXT NOT NULL,
        UNIQUE (sha256, chunking)
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        set_id INTEGER NOT NULL REFERENCES chunk_sets(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        page_start INTEGER, page_end INTEGER,
        line_start INTEGER, line_end INTEGER,
        tokens INTEGER NOT NULL
    );
    CREATE INDEX chunks_by_set ON chunks(set_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(terms);         -- rowid = chunks.id
    CREATE TABLE version_files (
        gpt_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('knowledge', 'evaluation', 'adapter')),
        name TEXT NOT NULL,                   -- as cited: handbook.md, policies/leave.pdf
        sha256 TEXT NOT NULL REFERENCES files(sha256),
        set_id INTEGER REFERENCES chunk_sets(id),
        PRIMARY KEY (gpt_id, version, kind, name),
        FOREIGN KEY (gpt_id, version) REFERENCES versions(gpt_id, number) ON DELETE CASCADE
    );
    CREATE VIRTUAL TABLE gpts_fts USING fts5(name, description, instructions, tags);  -- rowid = gpts.id
    CREATE TABLE ratings (
        gpt_id INTEGER NOT NULL REFERENCES gpts(id) ON DELETE CASCADE,
        user TEXT NOT NULL,
        stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
        review TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (gpt_id, user)
    );
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        gpt_id INTEGER REFERENCES gpts(id) ON DELETE SET NULL,
        slug TEXT NOT NULL,                   -- kept when the GPT is removed
        title TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_by_gpt ON conversations(gpt_id, created_at);
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        version INTEGER,                      -- the GPT version that answered (assistant messages)
        citations TEXT,                       -- JSON
        usage TEXT,                           -- JSON
        created_at TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE evaluations (
        gpt_id INTEGER NOT NULL REFERENCES gpts(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        metric TEXT NOT NULL,
        score REAL NOT NULL,
        details TEXT NOT NULL,                -- JSON
        created_at TEXT NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the server's API keys (gpts keys): only a hash of each key is kept (gpts.server.security says why).
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,                 -- the key's first characters, to tell keys apart in a list
        sha256 TEXT NOT NULL UNIQUE,          -- hex digest of the whole key
        created_at TEXT NOT NULL,
        last_used_at TEXT
    );
    """,
    # 3: the server's uploaded files and fine-tuning jobs (gpts.jobs), in OpenAI's terms; times in Unix seconds.
    """
    CREATE TABLE uploads (                    -- the copy: uploads/<id> in the store directory
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,              -- file-...
        filename TEXT NOT NULL,               -- as uploaded: shown, never used as a path
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE fine_tuning_jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,              -- ftjob-...
        model TEXT NOT NULL,                  -- the base model, as the client named it
        base_ref TEXT NOT NULL,               -- the model reference it stands for
        training_file TEXT NOT NULL,          -- file ids; a file may go once its jobs are done
        validation_file TEXT,
        hyperparameters TEXT NOT NULL,        -- JSON: n_epochs, batch_size, learning_rate_multiplier
        suffix TEXT,
        seed INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('validating_files', 'queued', 'running', 'succeeded', 'failed',
                                               'cancelled')),
        runner TEXT,                          -- "PID:TOKEN" of the job runner that runs it
        fine_tuned_model TEXT UNIQUE,         -- once succeeded
        result_file TEXT,                     -- once succeeded: the metrics as CSV (purpose fine-tune-results)
        trained_tokens INTEGER,               -- once succeeded: the training file's tokens times the epochs
        error TEXT,                           -- JSON {"code", "message", "param"} once failed
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX fine_tuning_jobs_by_status ON fine_tuning_jobs(status);
    CREATE TABLE fine_tuning_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,              -- ftevent-...
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id) ON DELETE CASCADE,
        level TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
        type TEXT NOT NULL CHECK (type IN ('message', 'metrics')),
        message TEXT NOT NULL,
        data TEXT,                            -- JSON; metrics: the step's row of metrics.jsonl
        step INTEGER,                         -- metrics: the step, so that a resumed run can rewind
        created_at INTEGER NOT NULL
    );
    CREATE INDEX fine_tuning_events_by_job ON fine_tuning_events(job_id, seq);
    CREATE TABLE fine_tuning_checkpoints (    -- the end of each epoch, as OpenAI reports checkpoints
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,              -- ftckpt-...
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        metrics TEXT NOT NULL,                -- JSON
        created_at INTEGER NOT NULL,
        UNIQUE (job_id, step)
    );
    """,
]


def store_dir() -> Path:
    return paths.home() / "store"


def database_path() -> Path:
    return store_dir() / "gpts.db"


def damaged(path: Path, e: sqlite3.DatabaseError) -> GptsError:
    """The error for a store file SQLite cannot read, found on opening it or by a later query."""
    return GptsError(f"The store database {path} cannot be read: {e}.",
                     f"It is damaged. Move it aside (mv '{path}' '{path}.damaged') to start an empty store, or "
                     "restore it from a backup.")


def connect(path: Path | None = None) -> sqlite3.Connection:
    """The store database, created and migrated on first use. Rows come back as sqlite3.Row."""
    path = path or database_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GptsError(f"Cannot create the store in {path.parent}: {e.strerror or e}.",
                        "Make the directory writable, or set GPTS_HOME to one that is.") from e
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        _check_version(conn, path)  # before the first write: a newer store is left byte for byte as it was
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash loses at most the last commit
        migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise damaged(path, e) from None
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise GptsError(f"The store {path} was written by a newer gpts (schema {version}; this one knows "
                        f"{len(MIGRATIONS)}).", "Upgrade gpts (pip install -U gpts) to use it.")
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    for number in range(_check_version(conn, path) + 1, len(MIGRATIONS) + 1):
        with transaction(conn):
            # Another process may have migrated while this one waited for the lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                continue
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


def _statements(script: str) -> list[str]:
    """A migration's statements one by one: executescript would commit the transaction that wraps them."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All or nothing: commits when the block ends, rolls back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
