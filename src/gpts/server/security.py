"""Who may use the server, and how much they may send: API keys, the bind check, the body size limits.

Keys are bearer tokens (`Authorization: Bearer KEY`, what the openai client sends as `api_key`), given to one
process with `gpts serve --api-key KEY` or kept in the store with `gpts keys create` (which prints the key once).
Once any key exists every route but /health needs one. A server without keys answers anyone who can reach it, so
it serves the loopback address only (`check_bind`).

The store keeps a key's SHA-256, never the key. A key is 256 random bits, so there is no dictionary to try and a
fast unsalted hash is as safe as a slow salted one (bcrypt, argon2: made for passwords people choose), while
checking a request stays a matter of microseconds. Digests are compared with hmac.compare_digest, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpts.errors import ConflictError, GptsError, NotFoundError
from gpts.server.errors import ApiError, error_response
from gpts.store.catalogue import now
from gpts.store.db import connect, transaction

KEY_START = "gpts-"  # tells a gpts key apart from other secrets (in a config file, or a secret scanner's rules)
PREFIX_LENGTH = len(KEY_START) + 6  # shown in `gpts keys list`; leaves 221 of the key's 256 bits unknown
OPEN_PATHS = {"/health"}  # load balancers probe it without a key
LAST_USED_EVERY = timedelta(minutes=1)  # how fresh `last used` is: one write a minute per key, not one a request


@dataclass(frozen=True)
class ApiKey:
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "created_at": self.created_at,
                "last_used_at": self.last_used_at}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str | None = None) -> tuple[ApiKey, str]:
    """A new key, kept in the store as its hash: (what the store knows about it, the key itself)."""
    key = KEY_START + secrets.token_urlsafe(32)
    prefix = key[:PREFIX_LENGTH]
    name = prefix if name is None else name.strip()
    if not name:
        raise GptsError("A key's name cannot be empty.", "Give --name a word or two, or leave it out.")
    created = ApiKey(name, prefix, now(), None)
    with closing(connect()) as conn, transaction(conn):
        if conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
            raise ConflictError(f"There is a key named {name!r} already.",
                                f"Pick another --name, or revoke that one first (gpts keys revoke {name}).")
        conn.execute("INSERT INTO api_keys (name, prefix, sha256, created_at) VALUES (?, ?, ?, ?)",
                     (name, prefix, hash_key(key), created.created_at))
    return created, key


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(row["name"], row["prefix"], row["created_at"], row["last_used_at"])


def list_keys() -> list[ApiKey]:
    with closing(connect()) as conn:
        return [_key(r) for r in conn.execute("SELECT * FROM api_keys ORDER BY id")]


def revoke_key(name_or_prefix: str) -> ApiKey:
    """Remove the key with this name or prefix; servers refuse it from their next request on."""
    with closing(connect()) as conn, transaction(conn):
        rows = conn.execute("SELECT * FROM api_keys WHERE name = ? OR prefix = ?",
                            (name_or_prefix, name_or_prefix)).fetchall()
        if not rows:
            raise NotFoundError(f"No key has the name or prefix {name_or_prefix!r}.",
                                "`gpts keys list` shows the keys' names and prefixes.")
        if len(rows) > 1:
            raise GptsError(f"{len(rows)} keys answer to {name_or_prefix!r}: "
                            f"{', '.join(r['name'] for r in rows)}.", "Revoke one by its prefix.")
        conn.execute("DELETE FROM api_keys WHERE id = ?", (rows[0]["id"],))
    return _key(rows[0])


def has_stored_keys() -> bool:
    with closing(connect()) as conn:
        return conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None


def given_key_hashes(api_keys: list[str]) -> list[str]:
    """The hashes of the keys given on the command line (--api-key), checked: an empty key would let anyone in."""
    if any(not key.strip() for key in api_keys):
        raise GptsError("An API key cannot be empty.", "Give --api-key a long random string, or make one with "
                                                        "`gpts keys create`.")
    return [hash_key(key) for key in api_keys]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`. Any name but localhost may resolve anywhere: not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: list[str]) -> None:
    """Refuse to serve beyond this machine with no key configured (none given, none in the store): call before the
    server starts listening on `host`."""
    if given_key_hashes(api_keys) or is_loopback(host) or has_stored_keys():
        return
    raise GptsError(f"Refusing to serve on {host} without an API key: anyone who can reach it could use "
                    "the server.", "Make a key with `gpts keys create` (or pass --api-key KEY) and give it to the "
                                   "clients, or serve on 127.0.0.1.")


class KeyRing:
    """The keys a server accepts: those it was given, and those in the store, read at each request so that a key
    made or revoked with `gpts keys` counts at once. Keys are required as soon as one exists, and stay required:
    revoking the last key of a server that serves beyond this machine locks everyone out, never opens it up."""

    def __init__(self, api_keys: list[str]):
        self._given = given_key_hashes(api_keys)
        self._required = bool(self._given)

    def refusal(self, key: str | None) -> ApiError | None:
        """Why a request with this bearer key (None: no key) is refused, or None to let it in. Blocks on the
        store: call it from a worker thread."""
        with closing(connect()) as conn:
            stored = conn.execute("SELECT id, sha256, last_used_at FROM api_keys").fetchall()
            self._required = self._required or bool(stored)
            if not self._required:
                return None
            if key is None:
                return ApiError(401, "You didn't provide an API key. Send it in an Authorization header using "
                                     "Bearer auth (Authorization: Bearer KEY; the openai client's api_key).",
                                headers={"WWW-Authenticate": "Bearer"})
            digest = hash_key(key)
            if any(hmac.compare_digest(digest, given) for given in self._given):
                return None
            for row in stored:
                if hmac.compare_digest(digest, row["sha256"]):
                    _note_use(conn, row)
                    return None
        return ApiError(401, "Incorrect API key provided. Ask the server's owner for a key (they make one with "
                             "`gpts keys create`).", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _note_use(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    last = row["last_used_at"]
    if last is None or datetime.now(UTC) - datetime.fromisoformat(last) >= LAST_USED_EVERY:
        with transaction(conn):
            conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now(), row["id"]))


def bearer_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
    return None


class RequireKey:
    """ASGI middleware: a 401 for requests without an accepted key, on every path but /health and those `is_open`
    lets through (the web page and its files: the page holds no data, the API it calls does)."""

    def __init__(self, app: ASGIApp, keys: KeyRing, is_open: Callable[[str], bool] = lambda path: False):
        self.app, self.keys, self.is_open = app, keys, is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self.is_open(scope["path"]):
            refusal = await run_in_threadpool(self.keys.refusal, bearer_key(scope))
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than this server accepts ({limit:,} bytes at most). "
                              "Send less (a large file goes to POST /v1/files).")


def accepts_upload(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route's function as taking uploads (files, bundles): its body may be as large as the upload limit.

        @router.post("/v1/files")
        @accepts_upload
        async def upload(...): ...
    """
    endpoint.accepts_upload = True  # type: ignore[attr-defined]
    return endpoint


class BodyLimit:
    """ASGI middleware: a 413 for a request body over the limit, counted as it arrives (a chunked body has no
    Content-Length to check). Uploads (routes marked `accepts_upload`) have their own, larger, limit.

    The limit is settled when the route first reads the body: by then the router has matched the route, and a
    request refused earlier (401, 404) is never read at all. Raised from `receive`, the error reaches FastAPI's
    handlers as an HTTPException, which answer it in OpenAI's shape."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int):
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            limit = self.max_upload if _takes_upload(scope) else self.max_body
            if received == 0 and _content_length(scope) > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _takes_upload(scope: Scope) -> bool:
    return getattr(getattr(scope.get("route"), "endpoint", None), "accepts_upload", False)


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0  # the server answers a malformed one before this
    return 0
