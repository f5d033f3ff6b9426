"""`gpts models list|show` and `gpts convert`: the models gpts knows, and their formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpts.cli.common import out, print_plain

app = typer.Typer(no_args_is_help=True, help="List and inspect models.")


@app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Models gpts knows by name, and models downloaded from the hub."""
    from gpts.api import list_models

    rows = list_models()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "available", "where")
    table.columns[-1].overflow = "fold"  # a path cut short with "..." is of no use
    for row in rows:
        table.add_row(row["name"], row["kind"], "yes" if row["available"] else "no", row["where"])
    out.print(table)


@app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="Model reference.")] = "default",
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Architecture, size, context, tokenizer, chat template and origin of a model."""
    from gpts.api import describe_model

    info = describe_model(model)
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in info.items():
        if key not in ("chat_template", "config"):
            table.add_row(f"[bold]{key}[/]", f"{value:,}" if key == "parameters" else str(value))
    out.print(table)
    out.print("[bold]chat template[/]")
    out.print(info["chat_template"] or "(none: ChatML is used)", markup=False, highlight=False)


def convert(src: Annotated[str, typer.Argument(help="Model reference to convert.")],
            to: Annotated[str, typer.Option(help="Target format: gpts, hf or gguf.")],
            out_path: Annotated[Path, typer.Option("--out", "-o", help="Output directory (gpts, hf) or .gguf file.")],
            gguf_type: Annotated[str, typer.Option("--gguf-type", help="GGUF tensor type: f32, f16 or q8_0.")] = "f16",
            force: Annotated[bool, typer.Option("--force", help="Replace an existing model at --out.")] = False,
            ) -> None:
    """Convert a model between the native, Hugging Face and GGUF formats."""
    from gpts.api import convert_model

    written = convert_model(src, to, out_path, gguf_type=gguf_type, overwrite=force)
    print_plain(f"Wrote {written}")
