"""The `gpts` command line. Thin: parse flags, call the Python API, print."""

from __future__ import annotations

import json
import re
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
Stop = Annotated[Optional[list[str]], typer.Option(
    help="Stop before this text (repeatable). \\n, \\t and \\\\ stand for a newline, a tab and a backslash.")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed: the same seed gives the same text.")]
IgnoreEos = Annotated[bool, typer.Option(help="Keep generating past the end-of-sequence token.")]
Truncate = Annotated[bool, typer.Option(help="Drop the start of a prompt that does not fit the context.")]


def sampling(max_new_tokens, max_length, temperature, top_k, top_p, min_p, repetition_penalty, stop, seed,
             ignore_eos, truncate) -> dict:
    return dict(max_new_tokens=max_new_tokens, max_length=max_length, temperature=temperature, top_k=top_k,
                top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                stop=[unescape(s) for s in stop] if stop else None, seed=seed, ignore_eos=ignore_eos or None,
                truncate=truncate or None)


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """A shell passes `--stop "\\n"` as a backslash and an n; a newline is what people mean by it."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m[1]], text)


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
    elif len(completions) == 1:
        print(completions[0].text)
    else:  # a rule between continuations, since a continuation may hold blank lines itself
        for i, c in enumerate(completions, 1):
            out.rule(f"{i}/{len(completions)}", style="dim")
            print(c.text)


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
            err.print("[dim]The conversation is cleared" + (" (the system prompt stays)." if system else ".") + "[/]")
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


def auto_or_number(name: str, text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise GptsError(f"--{name.replace('_', '-')} {text!r} is neither auto nor a number.",
                        f"Give --{name.replace('_', '-')} auto or a number.") from None


@app.command()
def finetune(model: ModelOpt = "default",
             data: Annotated[Optional[Path], typer.Option(
                 help="Training JSONL: OpenAI chat, prompt/completion, instruction/output or text/label.")] = None,
             out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory.")] = None,
             method: Annotated[str, typer.Option(help="lora (a small adapter) or full.")] = "lora",
             validation_file: Annotated[Optional[Path], typer.Option(help="Validation JSONL.")] = None,
             val_fraction: Annotated[float, typer.Option(
                 help="Without --validation-file: the share of the training file held out.")] = 0.0,
             n_epochs: Annotated[str, typer.Option(help="auto or a whole number.")] = "auto",
             batch_size: Annotated[str, typer.Option(help="auto or a whole number.")] = "auto",
             learning_rate_multiplier: Annotated[str, typer.Option(
                 help="auto or a number: times 1e-3 for LoRA, 2e-5 for full.")] = "auto",
             learning_rate: Annotated[Optional[float], typer.Option(help="An explicit learning rate.")] = None,
             lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
             lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (the update is scaled by alpha/rank).")] = 16.0,
             lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA path.")] = 0.0,
             lora_targets: Annotated[Optional[str], typer.Option(
                 help="Comma-separated projections (default: q,k,v,o,gate,up,down _proj).")] = None,
             labels: Annotated[Optional[str], typer.Option(
                 help="Classification: comma-separated label set (default: the file's labels).")] = None,
             instructions: Annotated[Optional[str], typer.Option(help="Classification: the instruction text.")] = None,
             max_length: Annotated[Optional[int], typer.Option(help="Tokens per example at most.")] = None,
             max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps (resumable).")] = None,
             eval_interval: Annotated[int, typer.Option(help="Steps between validation batches.")] = 10,
             dtype: DtypeOpt = "bfloat16",
             seed: Seed = None,
             resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
             json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False) -> None:
    """Fine-tune a model on your examples (LoRA or full); the run directory is a model reference."""
    from gpts.evaluate import parse_labels
    from gpts.finetune import FinetuneConfig, finetune as run_finetuning

    if out_dir is None:
        raise GptsError("No --out directory given.", "Add --out DIR for the fine-tuned model.")
    if resume:
        config = FinetuneConfig(out_dir=str(out_dir), resume=True, max_steps=max_steps)
    else:
        if data is None:
            raise GptsError("No --data file given.", "Add --data FILE.jsonl with your training examples.")
        config = FinetuneConfig(
            model=model, data=str(data), out_dir=str(out_dir), method=method,
            validation_data=str(validation_file) if validation_file else None, val_fraction=val_fraction,
            n_epochs=auto_or_number("n_epochs", n_epochs), batch_size=auto_or_number("batch_size", batch_size),
            learning_rate_multiplier=auto_or_number("learning_rate_multiplier", learning_rate_multiplier),
            learning_rate=learning_rate, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            lora_targets=[t.strip() for t in lora_targets.split(",")] if lora_targets else None,
            labels=parse_labels(labels) if labels else None, instructions=instructions, max_length=max_length,
            max_steps=max_steps, eval_interval=eval_interval, dtype=dtype, seed=1337 if seed is None else seed)
    summary = run_finetuning(config)
    if json_out:
        out.print_json(json.dumps(summary))


lora_app = typer.Typer(no_args_is_help=True, help="LoRA adapters.")
app.add_typer(lora_app, name="lora")


@lora_app.command("merge")
def lora_merge(adapter: Annotated[str, typer.Argument(help="A LoRA adapter directory (a fine-tuning run).")],
               out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the merged model.")],
               force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False) -> None:
    """Fold a LoRA adapter into its base model: a plain checkpoint, as fast as the base."""
    from gpts.api import merge_adapter

    merge_adapter(adapter, out_dir, overwrite=force)
    out.print(f"Merged {adapter} into {out_dir}", markup=False, highlight=False)



# -- evaluation ------------------------------------------------------------------------------------------------

eval_app = typer.Typer(no_args_is_help=True,
                       help="Evaluate a model: perplexity, classification, multiple choice, generation.")
app.add_typer(eval_app, name="eval")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ExamplesArg = Annotated[Path, typer.Argument(help="A JSONL file, one example a line.")]


def print_heading(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)  # holds paths: never markup, never cut


def metrics_table(rows: dict[str, object]) -> Table:
    table = Table("metric", "value")
    for name, value in rows.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@eval_app.command("perplexity")
def eval_perplexity(files: Annotated[list[Path], typer.Argument(help="UTF-8 text files.")],
                    model: ModelOpt = "default", dtype: DtypeOpt = "float32",
                    context: Annotated[Optional[int], typer.Option(
                        help="Window length in tokens (default: the model's context length).")] = None,
                    stride: Annotated[Optional[int], typer.Option(
                        help="Tokens the window moves by (default: half the window).")] = None,
                    as_json: JsonOpt = False) -> None:
    """Sliding-window perplexity of each file (windows never cross files) and of all of them."""
    from gpts.api import load
    from gpts.evaluate import perplexity

    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise GptsError(f"Cannot read {file}: {e}.", "Pass UTF-8 text files.") from e
    lm = load(model, dtype)
    result = perplexity(lm, texts, context, stride, progress=True)
    context = context or lm.config.context_length
    stride = stride or max(1, context // 2)
    if as_json:
        print(json.dumps({"model": model, "context": context, "stride": stride, **result.to_dict(),
                          "files": [{"file": str(f), **p.to_dict()} for f, p in zip(files, result.parts)]}))
        return
    print_heading(f"{model}: context {context}, stride {stride}")
    table = Table("file", "tokens", "bytes", "nll (nats/token)", "perplexity", "bits/byte")
    table.columns[0].overflow = "fold"
    named = list(zip(map(str, files), result.parts)) + ([("all", result)] if len(files) > 1 else [])
    for name, p in named:
        table.add_row(name, f"{p.tokens:,}", f"{p.bytes:,}", f"{p.nll:.4f}", f"{p.perplexity:.3f}",
                      f"{p.bits_per_byte:.4f}")
    out.print(table)


@eval_app.command("classify")
def eval_classify(file: ExamplesArg, model: ModelOpt = "default", dtype: DtypeOpt = "float32",
                  labels: Annotated[Optional[str], typer.Option(
                      help="The labels, comma separated (default: the model's task.json, else those in FILE).")] = None,
                  instructions: Annotated[Optional[str], typer.Option(
                      help="What to classify, said before the labels (default: the model's task.json, else "
                           "'Classify the text.').")] = None,
                  method: Annotated[str, typer.Option(
                      help="loglik: the most likely label; generate: a greedy reply matched to a label.")] = "loglik",
                  as_json: JsonOpt = False,
                  confusion_png: Annotated[Optional[Path], typer.Option(
                      "--confusion-png", help="Also draw the confusion matrix into this PNG file.")] = None) -> None:
    """Accuracy, precision, recall, F1 and the confusion matrix on labeled JSONL ({"text", "label"})."""
    from gpts.api import load
    from gpts.evaluate import classify, parse_labels, plot_confusion

    if method not in ("loglik", "generate"):
        raise GptsError(f"Unknown method {method!r}.", "Use --method loglik or --method generate.")
    label_list = parse_labels(labels) if labels is not None else None
    lm = load(model, dtype)
    result = classify(lm, file, label_list, instructions, method, progress=True)
    m = result.metrics
    if confusion_png is not None:
        plot_confusion(m, confusion_png)
    if as_json:
        print(json.dumps({"model": model, "method": method, **m}, ensure_ascii=False))
        return
    summary = {"examples": m["n"], "accuracy": m["accuracy"]}
    if method == "generate":
        summary["replies naming no label"] = m["unmatched"]
    print_heading(f"{model} on {file} ({method})")
    out.print(metrics_table(summary))
    averages = Table("average", "precision", "recall", "f1")
    for name in ("macro", "micro", "weighted"):
        averages.add_row(name, *(f"{m[name][k]:.4f}" for k in ("precision", "recall", "f1")))
    out.print(averages)
    per_class = Table("label", "precision", "recall", "f1", "support", title="per class", title_justify="left")
    for label, c in m["per_class"].items():
        per_class.add_row(label, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"]))
    out.print(per_class)
    cm = m["confusion_matrix"]
    confusion = Table("true \\ predicted", *cm["labels"], title="confusion matrix", title_justify="left")
    for label, row in zip(cm["labels"], cm["matrix"]):
        confusion.add_row(label, *map(str, row))
    out.print(confusion)
    if confusion_png is not None:
        out.print(f"Wrote {confusion_png}")


@eval_app.command("choice")
def eval_choice(file: ExamplesArg, model: ModelOpt = "default", dtype: DtypeOpt = "float32",
                delimiter: Annotated[str, typer.Option(help="Put between the context and each choice.")] = " ",
                as_json: JsonOpt = False) -> None:
    """Multiple-choice accuracy on JSONL ({"context", "choices", "answer"}): acc and acc_norm, as lm-eval-harness."""
    from gpts.api import load
    from gpts.evaluate import choice

    lm = load(model, dtype)
    result = choice(lm, file, delimiter, progress=True)
    if as_json:
        print(json.dumps({"model": model, "acc": result.acc, "acc_norm": result.acc_norm, "n": result.n}))
        return
    print_heading(f"{model} on {file}")
    out.print(metrics_table({"examples": result.n, "acc": result.acc, "acc_norm": result.acc_norm}))


@eval_app.command("generate")
def eval_generate(file: ExamplesArg, model: ModelOpt = "default", dtype: DtypeOpt = "float32",
                  max_new_tokens: Annotated[int, typer.Option(help="New tokens per reply at most.")] = 64,
                  chat: Annotated[Optional[bool], typer.Option(
                      "--chat/--no-chat", help="Prompt as a chat user turn (default: when the model has a chat "
                                               "template) or as raw text.")] = None,
                  as_json: JsonOpt = False) -> None:
    """Exact-match and contains scores of greedy replies on JSONL ({"prompt", "answer"})."""
    from gpts.api import load
    from gpts.evaluate import generate_eval

    lm = load(model, dtype)
    result = generate_eval(lm, file, max_new_tokens, chat, progress=True)
    if as_json:
        print(json.dumps({"model": model, "chat": result.chat, "exact_match": result.exact_match,
                          "contains": result.contains, "n": result.n, "outputs": result.outputs}, ensure_ascii=False))
        return
    print_heading(f"{model} on {file} ({'chat' if result.chat else 'raw prompt'})")
    out.print(metrics_table({"examples": result.n, "exact_match": result.exact_match, "contains": result.contains}))


def print_error(problem: str, fix: str) -> None:
    err.print("[bold red]Error:[/] ", end="")
    err.print(problem, markup=False, highlight=False)
    if fix:
        err.print(fix, markup=False, highlight=False)


def main() -> None:
    try:
        app()
    except GptsError as e:
        print_error(e.problem, e.fix)
        sys.exit(1)
    except OSError as e:  # the machine's side (disk full, permissions) rather than a bug: no traceback either
        where = f" ({e.filename})" if e.filename else ""
        print_error(f"{e.strerror or e}{where}.", "Check the path, its permissions and the free disk space.")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
