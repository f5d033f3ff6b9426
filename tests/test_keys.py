"""API keys: `gpts keys create|list|revoke` and the library under them (the server's use of them: tests/server)."""

import hashlib
import json
from contextlib import closing

import pytest

from helpers import run

from gpts.errors import ConflictError, GptsError
from gpts.server.security import create_key, list_keys, revoke_key
from gpts.store.db import connect


def stored_rows() -> list[dict]:
    with closing(connect()) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM api_keys ORDER BY id")]


def test_create_prints_the_key_once_and_the_store_keeps_only_its_hash(monkeypatch, capsys):
    code, stdout, stderr = run(monkeypatch, capsys, "keys", "create", "--name", "laptop")
    assert code == 0 and "not shown again" in stderr
    key = stdout.strip()
    assert key.startswith("gpts-") and len(key) > 40 and key not in stderr

    (row,) = stored_rows()
    assert row["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["name"] == "laptop" and key.startswith(row["prefix"]) and len(row["prefix"]) < len(key) // 3
    assert not any(key in str(value) for value in row.values())

    for args in (["keys", "list"], ["keys", "list", "--json"]):
        code, stdout, stderr = run(monkeypatch, capsys, *args)
        assert code == 0 and "laptop" in stdout and row["prefix"] in stdout
        assert key not in stdout + stderr
    (listed,) = json.loads(stdout)
    assert listed == {"name": "laptop", "prefix": row["prefix"], "created_at": row["created_at"],
                      "last_used_at": None}


def test_revoke_by_name_or_prefix(monkeypatch, capsys):
    first, _ = create_key("first")
    second, _ = create_key()
    assert second.name == second.prefix  # unnamed keys go by their prefix
    assert first.prefix != second.prefix

    code, stdout, _ = run(monkeypatch, capsys, "keys", "revoke", first.prefix)
    assert code == 0 and "Revoked key 'first'" in stdout
    assert [k.name for k in list_keys()] == [second.name]
    assert revoke_key(second.name) == second
    code, _, stderr = run(monkeypatch, capsys, "keys", "list")
    assert code == 0 and "No keys" in stderr

    code, _, stderr = run(monkeypatch, capsys, "keys", "revoke", first.prefix)
    assert code == 1 and "No key has the name or prefix" in stderr and "gpts keys list" in stderr


def test_names_are_unique_and_not_empty():
    create_key("ci")
    with pytest.raises(ConflictError, match="named 'ci' already"):
        create_key("ci")
    with pytest.raises(GptsError, match="cannot be empty"):
        create_key("  ")
    assert [k.name for k in list_keys()] == ["ci"]


def test_a_name_that_is_another_keys_prefix_is_ambiguous():
    first, _ = create_key("first")
    create_key(first.prefix)
    with pytest.raises(GptsError, match="2 keys answer to") as ambiguous:
        revoke_key(first.prefix)
    assert "first" in ambiguous.value.problem
    assert len(list_keys()) == 2
    revoke_key("first")
    assert revoke_key(first.prefix).name == first.prefix  # now only the second answers to it
