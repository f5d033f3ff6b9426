"""The `gpts` command: one module per group of commands, each thin (parse flags, call the library, print).

    chat.py       generate, chat
    models.py     models list, models show, convert
    train.py      prepare, pretrain
    finetune.py   finetune, lora merge, tune (a custom GPT's model, on its examples)
    evaluate.py   eval perplexity | classify | choice | generate
    store.py      create, list, show, search, edit, versions, restore, rm, rate, featured, trending, export, import
    run.py        run (talk with a custom GPT), conversations
    serve.py      serve (the OpenAI-compatible API)
    keys.py       keys create | list | revoke (the API keys `gpts serve` accepts)
    common.py     what they share: consoles, option types, the sampling flags, running a long job

Command modules import nothing heavy at the top, so `gpts --help` and errors in flags come back at once.
"""

from __future__ import annotations

import sqlite3
import sys

import typer

from gpts.cli import chat, evaluate, finetune, keys, models, run, serve, store, train
from gpts.errors import GptsError
from gpts.terminal import print_error, show_warnings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run, train, fine-tune, evaluate and convert GPT models, and build custom GPTs, on your own machine, "
                       "offline by default.")
app.command()(chat.generate)
app.command()(chat.chat)
app.add_typer(models.app, name="models")
app.command()(models.convert)
app.command()(train.prepare)
app.command()(train.pretrain)
app.command()(finetune.finetune)
app.add_typer(finetune.lora_app, name="lora")
app.add_typer(evaluate.app, name="eval")
app.command()(store.create)
app.command("list")(store.list_)
app.command()(store.show)
app.command()(store.search)
app.command()(run.run)
app.command()(store.edit)
app.command()(finetune.tune)
app.command()(store.versions)
app.command()(store.restore)
app.command()(store.rm)
app.command()(store.rate)
app.command()(store.featured)
app.command()(store.trending)
app.command()(store.export)
app.command("import")(store.import_)
app.command()(run.conversations)
app.command()(serve.serve)
app.add_typer(keys.app, name="keys")


def main() -> None:
    show_warnings()
    try:
        app()
    except GptsError as e:
        print_error(e.problem, e.fix)
        sys.exit(1)
    except sqlite3.DatabaseError as e:  # a store damaged past its first page: found only when a query reads it
        from gpts.store.db import damaged, database_path

        error = damaged(database_path(), e)
        print_error(error.problem, error.fix)
        sys.exit(1)
    except OSError as e:  # the machine's side (disk full, permissions) rather than a bug: no traceback either
        where = f" ({e.filename})" if e.filename else ""
        print_error(f"{e.strerror or e}{where}.", "Check the path, its permissions and the free disk space.")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
