"""Conversations with GPTs, kept in the store: each message, and for each reply the GPT version that gave it, its
citations and its token counts."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

from gpts.errors import NotFoundError
from gpts.store.catalogue import Gpt, now
from gpts.store.db import connect, transaction

TITLE_CHARS = 60


@dataclass
class Conversation:
    id: str
    slug: str
    title: str
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


def start_conversation(gpt: Gpt, first_message: str, conn: sqlite3.Connection | None = None) -> str:
    conn = conn or connect()
    conversation_id = uuid.uuid4().hex[:12]
    with transaction(conn):
        conn.execute("INSERT INTO conversations (id, gpt_id, slug, title, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (conversation_id, gpt.id, gpt.slug, _title(first_message), now(), now()))
    return conversation_id


def add_turn(conversation_id: str, user: str, reply: str, version: int, citations: list[dict[str, Any]],
             usage: dict[str, int], conn: sqlite3.Connection | None = None) -> None:
    """A question and its answer, written together (a conversation never ends in an unanswered question)."""
    conn = conn or connect()
    with transaction(conn):
        seq = conn.execute("SELECT coalesce(max(seq), 0) FROM messages WHERE conversation_id = ?",
                           (conversation_id,)).fetchone()[0]
        at = now()
        conn.execute("INSERT INTO messages (conversation_id, seq, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
                     (conversation_id, seq + 1, user, at))
        conn.execute("INSERT INTO messages (conversation_id, seq, role, content, version, citations, usage, created_at) "
                     "VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?)",
                     (conversation_id, seq + 2, reply, version, json.dumps(citations, ensure_ascii=False),
                      json.dumps(usage), at))
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (at, conversation_id))


def get_conversation(conversation_id: str, conn: sqlite3.Connection | None = None) -> Conversation:
    conn = conn or connect()
    row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"No conversation {conversation_id!r}.", "See `gpts conversations` for their ids.")
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
    """Conversations, the latest first; those with one GPT when `slug` is given."""
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
            raise NotFoundError(f"No conversation {conversation_id!r}.", "See `gpts conversations` for their ids.")
