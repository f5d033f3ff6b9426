"""`gpts keys create|list|revoke`: the API keys `gpts serve` accepts. The store keeps a hash of each key, so a key
is shown once, when it is made, and never again."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from gpts.cli.common import JsonOpt, out, print_plain
from gpts.terminal import err

app = typer.Typer(no_args_is_help=True, help="API keys for `gpts serve`: clients send one as "
                                             "Authorization: Bearer KEY (the openai client's api_key).")


@app.command()
def create(name: Annotated[Optional[str], typer.Option(help="What the key is for (default: its prefix).")] = None,
           as_json: JsonOpt = False) -> None:
    """Make a key and print it: this is the only time it is shown."""
    from gpts.server.security import create_key

    key, secret = create_key(name)
    if as_json:
        print(json.dumps({**key.to_dict(), "key": secret}))
        return
    print_plain(secret)  # alone on stdout, for KEY=$(gpts keys create)
    err.print(f"Made key {key.name!r}. Keep it now: it is not shown again. Servers started from now on, and "
              "running ones, accept it.", markup=False, highlight=False)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """The keys: names, prefixes, when they were made and last used (never the keys themselves)."""
    from gpts.server.security import list_keys

    keys = list_keys()
    if as_json:
        print(json.dumps([k.to_dict() for k in keys]))
    elif keys:
        table = Table("name", "prefix", "created", "last used", box=box.SIMPLE_HEAD, pad_edge=False)
        for k in keys:
            table.add_row(k.name, k.prefix + "…", k.created_at, k.last_used_at or "never")
        out.print(table)
    else:
        err.print("No keys. Make one with `gpts keys create`.")


@app.command()
def revoke(name_or_prefix: Annotated[str, typer.Argument(help="The key's name or prefix (see `gpts keys list`).")]
           ) -> None:
    """Remove a key: servers refuse it from their next request on."""
    from gpts.server.security import revoke_key

    key = revoke_key(name_or_prefix)
    print_plain(f"Revoked key {key.name!r} ({key.prefix}…).")
