"""Conversations with GPTs and models, kept in the store: each message, and for each reply the GPT version that gave
it (none for a plain model), its citations and its token counts.

A conversation with a GPT links the GPT (its usage counts it) and keeps its slug when the GPT goes; one with a plain
model keeps the model's id in the same place."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpts.errors import GptsError, NotFoundError
from gpts.store.catalogue import Gpt, now
from gpts.store.db import connect, transaction

TITLE_CHARS = 60


@dataclass
class Conversation:
    id: str
    slug: str  # the GPT's slug, or the model's id
    title: str  # "" until the first question names it
    created_at: str
    updated_at: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # {"role", "content"[, "version", "citations", "usage"]}
    turns: int = 0

    def history(self) -> list[dict[str, str]]:
        """The messages as a model reads them."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1] + "…"


def _missing(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"No conversation {conversation_id!r}.", "See `gpts conversations` for their ids.")


def start_conversation(model: Gpt | str, title: str | None = None, conn: sqlite3.Connection | None = None) -> str:
    """A new conversation with a GPT or with a plain model (its id), untitled unless `title` is given: its first
    question names it then."""
    conn = conn or connect()
    conversation_id = uuid.uuid4().hex[:12]
    gpt_id, slug = (model.id, model.slug) if isinstance(model, Gpt) else (None, model)
    with transaction(conn):
        conn.execute("INSERT INTO conversations (id, gpt_id, slug, title, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (conversation_id, gpt_id, slug, (title or "").strip(), now(), now()))
    return conversation_id


def rename_conversation(conversation_id: str, title: str, conn: sqlite3.Connection | None = None) -> None:
    conn = conn or connect()
    with transaction(conn):
        if conn.execute("UPDATE conversations SET title = ? WHERE id = ?",
                        (title.strip(), conversation_id)).rowcount == 0:
            raise _missing(conversation_id)


def add_turn(conversation_id: str, user: str, reply: str, version: int | None = None,
             citations: Sequence[dict[str, Any]] = (), usage: dict[str, Any] | None = None,
             conn: sqlite3.Connection | None = None, *, keep: int | None = None) -> None:
    """A question and its answer, written together (a conversation never ends in an unanswered question). `version`
    is the GPT version that answered; None: its GPT's current one (none in a model's conversation). `keep`: the
    turns kept before this one, the later ones replaced by it (a regenerated answer, an edited question); None:
    all of them."""
    conn = conn or connect()
    with transaction(conn):
        row = conn.execute("SELECT c.title, g.version FROM conversations c LEFT JOIN gpts g ON g.id = c.gpt_id "
                           "WHERE c.id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise _missing(conversation_id)
        turns = conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?",
                             (conversation_id,)).fetchone()[0] // 2
        if keep is not None and not 0 <= keep <= turns:
            raise GptsError(f"Cannot keep {keep} turns of conversation {conversation_id}: it has {turns}.",
                            f"Keep from 0 to {turns} turns.")
        kept = turns if keep is None else keep
        conn.execute("DELETE FROM messages WHERE conversation_id = ? AND seq > ?", (conversation_id, 2 * kept))
        at = now()
        conn.execute("INSERT INTO messages (conversation_id, seq, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
                     (conversation_id, 2 * kept + 1, user, at))
        conn.execute("INSERT INTO messages (conversation_id, seq, role, content, version, citations, usage, created_at) "
                     "VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?)",
                     (conversation_id, 2 * kept + 2, reply, row["version"] if version is None else version,
                      json.dumps(list(citations), ensure_ascii=False), json.dumps(usage or {}), at))
        conn.execute("UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                     (at, row["title"] or _title(user), conversation_id))


def get_conversation(conversation_id: str, conn: sqlite3.Connection | None = None) -> Conversation:
    conn = conn or connect()
    row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise _missing(conversation_id)
    messages = []
    for m in conn.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,)):
        message: dict[str, Any] = {"role": m["role"], "content": m["content"], "at": m["created_at"]}
        if m["role"] == "assistant":
            message.update(version=m["version"], citations=json.loads(m["citations"] or "[]"),
                           usage=json.loads(m["usage"] or "{}"))
        messages.append(message)
    return Conversation(row["id"], row["slug"], row["title"], row["created_at"], row["updated_at"], messages,
                        len(messages) // 2)


def list_conversations(slug: str | None = None, conn: sqlite3.Connection | None = None) -> list[Conversation]:
    """Conversations, the latest first; those with one GPT or model when `slug` is given."""
    conn = conn or connect()
    where, args = ("WHERE c.slug = ?", (slug,)) if slug else ("", ())
    rows = conn.execute(f"SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
                        f"FROM conversations c {where} ORDER BY c.updated_at DESC, c.rowid DESC", args).fetchall()
    return [Conversation(r["id"], r["slug"], r["title"], r["created_at"], r["updated_at"], turns=r["n"] // 2)
            for r in rows]


def remove_conversation(conversation_id: str, conn: sqlite3.Connection | None = None) -> None:
    conn = conn or connect()
    with transaction(conn):
        if conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount == 0:
            raise _missing(conversation_id)
