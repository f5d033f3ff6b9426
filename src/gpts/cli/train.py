"""`gpts prepare` and `gpts pretrain`: a corpus into token shards, and a model trained on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from gpts.cli.common import out, run_job, summary_table
from gpts.errors import GptsError
from gpts.terminal import EventView

if TYPE_CHECKING:
    from gpts.data import PreparedData


def prepare(sources: Annotated[Optional[list[str]], typer.Argument(
                help="Text files, directories, .jsonl files, or hf:DATASET[:SPLIT]. "
                     "None: the Python standard library's sources.")] = None,
            out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the token shards.")] = Path("data"),
            tokenizer: Annotated[str, typer.Option(help="A model reference (its tokenizer), bpe:VOCAB_SIZE, or char.")]
            = "bpe:8192",
            val_fraction: Annotated[float, typer.Option(help="Share of tokens, from the end, held out.")] = 0.1,
            include: Annotated[Optional[list[str]], typer.Option(help="Glob of files to take from directories.")] = None,
            exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of files to skip.")] = None,
            text_field: Annotated[str, typer.Option(help="The JSONL field that holds the text.")] = "text",
            force: Annotated[bool, typer.Option("--force", help="Replace the prepared data at --out (its own files "
                                                                "only; nothing else there is touched).")] = False,
            ) -> None:
    """Tokenize a corpus into memory-mapped token shards with a train/validation split."""
    from gpts.data import prepare as prepare_data

    with EventView() as view:
        prepared = prepare_data(sources or [], out_dir, tokenizer=tokenizer, val_fraction=val_fraction,
                                include=include or [], exclude=exclude or [], text_field=text_field, overwrite=force,
                                report=view)
    out.print(prepared_summary(prepared))


def prepared_summary(data: PreparedData) -> str:
    m = data.manifest
    inputs = m["inputs"]
    sources = ", ".join(escape(s) for s in m["sources"])
    lines = [f"Prepared [bold]{escape(str(data.path))}[/] from {sources}",
             f"  {count(len(inputs), 'input')}, {count(m['documents'], 'document')}, {m['bytes']:,} bytes",
             f"  tokens: {m['tokens']['train']:,} train + {m['tokens']['val']:,} validation "
             f"(the last {m['val_fraction']:g}), {m['dtype']}",
             f"  vocabulary: {data.vocab_size:,} ({escape(m['tokenizer']['spec'])})"]
    if m["binary_files_skipped"]:
        lines.append(f"  [yellow]skipped {count(m['binary_files_skipped'], 'binary file')}[/]")
    wide = m.get("wide_files_skipped", [])
    if wide:
        lines.append(f"  [yellow]skipped {count(len(wide), 'UTF-16/32 file')} (convert them to UTF-8 to include "
                     "them)[/]")
    invalid = [i for i in inputs if "invalid_utf8_at" in i]
    if invalid:
        lines.append(f"  [yellow]invalid UTF-8 replaced by U+FFFD in {count(len(invalid), 'input')}, first in "
                     f"{escape(invalid[0]['source'])} at byte {invalid[0]['invalid_utf8_at']:,}[/]")
    return "\n".join(lines)


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def parse_settings(pairs: list[str] | None) -> dict:
    """--set KEY=VALUE pairs; VALUE is read as YAML (numbers, booleans, lists), as in the config file."""
    import yaml

    settings = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GptsError(f"--set {pair!r} is not KEY=VALUE.", "Write it like --set learning_rate=3e-4.")
        try:
            settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise GptsError(f"--set {pair!r}: the value is not valid YAML ({e}).", "Quote strings that need it.") from e
    return settings


def pretrain(config: Annotated[Optional[Path], typer.Option(help="YAML file of training settings.")] = None,
             data: Annotated[Optional[list[str]], typer.Option(
                 help="Corpus (as for `gpts prepare`) or a prepared data directory.")] = None,
             out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory.")] = None,
             model: Annotated[Optional[str], typer.Option(help="Model preset to train from scratch.")] = None,
             init: Annotated[Optional[str], typer.Option(help="Continue pretraining this model reference.")] = None,
             tokenizer: Annotated[Optional[str], typer.Option(help="As for `gpts prepare`.")] = None,
             resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
             max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
             max_tokens: Annotated[Optional[int], typer.Option(help="Stop after this many training tokens.")] = None,
             max_time: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
             target_val_loss: Annotated[Optional[float], typer.Option(
                 help="Stop once the full validation loss is at or below this.")] = None,
             settings: Annotated[Optional[list[str]], typer.Option(
                 "--set", help="Any other setting, KEY=VALUE (repeatable); overrides the config file.")] = None,
             ) -> None:
    """Train a GPT on a corpus: from a preset, or continuing from a model (--init). Ctrl-C saves a checkpoint."""
    from gpts.train import TrainConfig, pretrain as run_pretraining

    flags = dict(data=data, out_dir=out_dir, model=model, init=init, tokenizer=tokenizer, resume=resume or None,
                 max_steps=max_steps, max_tokens=max_tokens, max_time=max_time, target_val_loss=target_val_loss)
    overrides = {**parse_settings(settings), **{k: v for k, v in flags.items() if v is not None}}
    train_config = TrainConfig.load(config, overrides)
    summary, stop = run_job(lambda report, stop: run_pretraining(train_config, report, stop),
                            resume=f"gpts pretrain --out {train_config.out_dir} --resume")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        out.print(summary_table(summary, "pretraining summary"))
    if stop.is_set():
        raise typer.Exit(stop.exit_code)
