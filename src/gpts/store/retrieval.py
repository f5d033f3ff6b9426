"""Finding the passages of a GPT's knowledge files that answer a question: SQLite FTS5, ranked by BM25."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from gpts.store.fts import match_expression


def where(file: str, pages: tuple[int, int] | None, lines: tuple[int, int] | None) -> str:
    """'handbook.md, lines 3-9' or 'policies.pdf, page 2': how prompts and citations name a place in a file."""
    if pages:
        first, last = pages
        return f"{file}, page {first}" if first == last else f"{file}, pages {first}-{last}"
    if lines:
        first, last = lines
        return f"{file}, line {first}" if first == last else f"{file}, lines {first}-{last}"
    return file


def place(file: str, chunk: int, pages: tuple[int, int] | None, lines: tuple[int, int] | None) -> dict[str, Any]:
    """A place in a knowledge file as JSON: {"file", "chunk", "pages" or "lines"}."""
    span = {"pages": list(pages)} if pages else {"lines": list(lines)} if lines else {}
    return {"file": file, "chunk": chunk, **span}


@dataclass(frozen=True)
class Passage:
    """A chunk of a knowledge file, found for a question."""

    file: str
    chunk: int
    text: str
    pages: tuple[int, int] | None
    lines: tuple[int, int] | None
    tokens: int
    score: float  # BM25 as SQLite gives it: lower is better

    def where(self) -> str:
        return where(self.file, self.pages, self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {**place(self.file, self.chunk, self.pages, self.lines), "text": self.text}


def retrieve(conn: sqlite3.Connection, gpt_id: int, version: int, query: str, top_k: int) -> list[Passage]:
    """The `top_k` chunks of the version's knowledge files that best match `query`, best first."""
    expression = match_expression(query)
    if expression is None:
        return []
    rows = conn.execute(
        "SELECT vf.name, c.idx, c.text, c.page_start, c.page_end, c.line_start, c.line_end, c.tokens, "
        "bm25(chunks_fts) AS score FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
        "JOIN version_files vf ON vf.set_id = c.set_id "
        "WHERE chunks_fts MATCH ? AND vf.gpt_id = ? AND vf.version = ? AND vf.kind = 'knowledge' "
        "ORDER BY score LIMIT ?", (expression, gpt_id, version, top_k)).fetchall()
    return [Passage(r[0], r[1], r[2], (r[3], r[4]) if r[3] is not None else None,
                    (r[5], r[6]) if r[5] is not None else None, r[7], r[8]) for r in rows]
