"""What the tables of gpts.jobs share: OpenAI-style ids, Unix times, and OpenAI's cursor pagination."""

from __future__ import annotations

import secrets
import sqlite3
import string
import time
from collections.abc import Sequence
from typing import Any, Literal

from gpts.errors import GptsError

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random id as OpenAI writes them: "file-", "ftjob-", ... and letters and digits."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def unix_now() -> int:
    """OpenAI's times are whole Unix seconds."""
    return int(time.time())


def page(conn: sqlite3.Connection, table: str, what: str, after: str | None, limit: int, where: str = "",
         args: Sequence[Any] = (), order: Literal["asc", "desc"] = "desc") -> tuple[list[sqlite3.Row], bool]:
    """One page of `table`'s rows (those matching `where`), newest first unless `order` is "asc", beginning after
    the row whose id is `after`, and whether more follow (OpenAI's `has_more`). `what` names the rows in errors."""
    conditions, params = ([where] if where else []), list(args)
    if after is not None:
        row = conn.execute(f"SELECT seq FROM {table} WHERE id = ?", (after,)).fetchone()
        if row is None:
            raise GptsError(f"after={after!r} is not the id of a {what}.",
                            f"Pass the id of the last {what} of the previous page.")
        conditions.append("seq < ?" if order == "desc" else "seq > ?")
        params.append(row["seq"])
    where_clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = conn.execute(f"SELECT * FROM {table}{where_clause} ORDER BY seq {order.upper()} LIMIT ?",
                        (*params, limit + 1)).fetchall()
    return rows[:limit], len(rows) > limit
