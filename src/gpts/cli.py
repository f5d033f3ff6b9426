"""The `gpts` command line. Thin: parse flags, call the Python API, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpts.errors import GptsError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run, convert and inspect GPT models on your own machine, offline by default.")
models_app = typer.Typer(no_args_is_help=True, help="List and inspect models.")
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error paragraph stays one line per sentence in logs

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model reference: a name, a path, or hf:ORG/NAME[@REV].")]
DtypeOpt = Annotated[str, typer.Option(help="Compute dtype: float32 or bfloat16.")]

# Sampling flags shared by `generate` and `chat`. None means "not given": the model's defaults apply.
MaxNewTokens = Annotated[Optional[int], typer.Option(help="New tokens to generate at most.")]
MaxLength = Annotated[Optional[int], typer.Option(help="Prompt + new tokens at most (max-new-tokens wins).")]
Temperature = Annotated[Optional[float], typer.Option(help="0 is greedy; higher is more random.")]
TopK = Annotated[Optional[int], typer.Option(help="Sample from the k most likely tokens (0: off).")]
TopP = Annotated[Optional[float], typer.Option(help="Sample from the smallest set with this total probability.")]
MinP = Annotated[Optional[float], typer.Option(help="Drop tokens below this fraction of the top probability.")]
RepetitionPenalty = Annotated[Optional[float], typer.Option(help="Penalize tokens already seen (1: off).")]
Stop = Annotated[Optional[list[str]], typer.Option(help="Stop before this text (repeatable).")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed: the same seed gives the same text.")]
IgnoreEos = Annotated[bool, typer.Option(help="Keep generating past the end-of-sequence token.")]
Truncate = Annotated[bool, typer.Option(help="Drop the start of a prompt that does not fit the context.")]


def sampling(max_new_tokens, max_length, temperature, top_k, top_p, min_p, repetition_penalty, stop, seed,
             ignore_eos, truncate) -> dict:
    return dict(max_new_tokens=max_new_tokens, max_length=max_length, temperature=temperature, top_k=top_k,
                top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, stop=stop or None, seed=seed,
                ignore_eos=ignore_eos or None, truncate=truncate or None)


# -- generate and chat ----------------------------------------------------------------------------------


@app.command()
def generate(prompt: Annotated[str, typer.Argument(help="The text to continue.")],
             model: ModelOpt = "default", dtype: DtypeOpt = "float32",
             max_new_tokens: MaxNewTokens = None, max_length: MaxLength = None, temperature: Temperature = None,
             top_k: TopK = None, top_p: TopP = None, min_p: MinP = None,
             repetition_penalty: RepetitionPenalty = None, stop: Stop = None, seed: Seed = None,
             num_return_sequences: Annotated[int, typer.Option("--num-return-sequences", "-n",
                                                               help="Continuations to generate.")] = 1,
             stream_: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
             ignore_eos: IgnoreEos = False, truncate: Truncate = False,
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with tokens and timings.")] = False,
             ) -> None:
    """Continue PROMPT (raw text, no chat template); print only the continuation(s)."""
    from gpts.api import load

    if stream_ and (as_json or num_return_sequences > 1):
        raise GptsError("--stream prints one continuation as plain text.", "Drop --stream, or --json / -n.")
    options = sampling(max_new_tokens, max_length, temperature, top_k, top_p, min_p, repetition_penalty, stop, seed,
                       ignore_eos, truncate)
    lm = load(model, dtype)
    events = lm.stream(prompt, num_return_sequences=num_return_sequences, **options)
    for event in events:
        if stream_:
            out.file.write(event.text)
            out.file.flush()
    completions = events.completions
    if stream_:
        out.file.write("\n")
    elif as_json:
        first = completions[0].timings
        predicted_n = sum(c.timings.predicted_n for c in completions)
        predicted_ms = max(c.timings.predicted_ms for c in completions)
        timings = type(first)(first.prompt_n, first.prompt_ms, predicted_n, predicted_ms)
        print(json.dumps({
            "model": model,
            "completions": [{"text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason}
                            for c in completions],
            "usage": {"prompt_tokens": first.prompt_n, "completion_tokens": predicted_n},
            "timings": timings.to_dict(),
        }, ensure_ascii=False))
    else:
        print("\n\n".join(c.text for c in completions))


@app.command()
def chat(model: ModelOpt = "default", dtype: DtypeOpt = "float32",
         system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
         message: Annotated[Optional[str], typer.Option(help="Answer this one message, print the reply, exit.")] = None,
         max_new_tokens: MaxNewTokens = None, max_length: MaxLength = None, temperature: Temperature = None,
         top_k: TopK = None, top_p: TopP = None, min_p: MinP = None,
         repetition_penalty: RepetitionPenalty = None, stop: Stop = None, seed: Seed = None,
         ignore_eos: IgnoreEos = False, truncate: Truncate = False) -> None:
    """Talk with a model: an interactive multi-turn chat, or one reply with --message."""
    from gpts.api import load

    options = sampling(max_new_tokens, max_length, temperature, top_k, top_p, min_p, repetition_penalty, stop, seed,
                       ignore_eos, truncate)
    with err.status(f"Loading {model}..."):
        lm = load(model, dtype)
    history = [{"role": "system", "content": system}] if system else []

    def reply(text: str) -> str:
        history.append({"role": "user", "content": text})
        events = lm.chat_stream(history, **options)
        for event in events:
            out.file.write(event.text)
            out.file.flush()
        out.file.write("\n")
        answer = events.completions[0].text
        history.append({"role": "assistant", "content": answer})
        return answer

    if message is not None:
        if not message.strip():
            raise GptsError("The message is empty.", "Pass some text with --message, or leave it out to chat.")
        reply(message)
        return
    err.print(f"[dim]Chatting with {model} ({lm.ref.describe()}). /reset clears the conversation, "
              "/exit or Ctrl-D leaves.[/]")
    while True:
        try:
            text = out.input("[bold green]> [/]")
        except EOFError:
            out.print()
            return
        if text.strip() in ("/exit", "/quit"):
            return
        if text.strip() == "/reset":
            del history[1 if system else 0:]
            continue
        if text.strip():
            reply(text)


# -- models ------------------------------------------------------------------------------------------


@models_app.command("list")
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


@models_app.command("show")
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


@app.command()
def convert(src: Annotated[str, typer.Argument(help="Model reference to convert.")],
            to: Annotated[str, typer.Option(help="Target format: gpts, hf or gguf.")],
            out_path: Annotated[Path, typer.Option("--out", "-o", help="Output directory (gpts, hf) or .gguf file.")],
            gguf_type: Annotated[str, typer.Option("--gguf-type", help="GGUF tensor type: f32, f16 or q8_0.")] = "f16",
            force: Annotated[bool, typer.Option("--force", help="Replace an existing model at --out.")] = False,
            ) -> None:
    """Convert a model between the native, Hugging Face and GGUF formats."""
    from gpts.api import convert_model

    written = convert_model(src, to, out_path, gguf_type=gguf_type, overwrite=force)
    out.print(f"Wrote {written}")


# -- pretraining ------------------------------------------------------------------------------------------


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


@app.command()
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
            force: Annotated[bool, typer.Option("--force", help="Replace existing shards at --out.")] = False,
            ) -> None:
    """Tokenize a corpus into memory-mapped token shards with a train/validation split."""
    from gpts.data import prepare as prepare_data

    prepared = prepare_data(sources or [], out_dir, tokenizer=tokenizer, val_fraction=val_fraction,
                            include=include or [], exclude=exclude or [], text_field=text_field, overwrite=force)
    out.print(prepared.summary())


@app.command()
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
    """Train a GPT on a corpus: from a preset, or continuing from a model (--init)."""
    from gpts.train import TrainConfig, pretrain as run_pretraining

    flags = dict(data=data, out_dir=out_dir, model=model, init=init, tokenizer=tokenizer, resume=resume or None,
                 max_steps=max_steps, max_tokens=max_tokens, max_time=max_time, target_val_loss=target_val_loss)
    overrides = {**parse_settings(settings), **{k: v for k, v in flags.items() if v is not None}}
    run_pretraining(TrainConfig.load(config, overrides))


def main() -> None:
    try:
        app()
    except GptsError as e:
        err.print(f"[bold red]Error:[/] {e.problem}", highlight=False)
        if e.fix:
            err.print(e.fix, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
