"""`gpts eval perplexity|classify|choice|generate`: a model measured on text or labeled examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from gpts.cli.common import DtypeOpt, JsonOpt, ModelOpt, ModelOrGptOpt, out, print_plain
from gpts.cli.store import SlugArg
from gpts.errors import GptsError
from gpts.terminal import EventView

app = typer.Typer(no_args_is_help=True, help="Evaluate a model: perplexity, classification, multiple choice, generation.")

ExamplesArg = Annotated[Path, typer.Argument(help="A JSONL file, one example a line.")]


def _load(model: str, dtype: str) -> tuple[Any, Any]:
    """The model to evaluate, and for a custom GPT (gpt:SLUG, or a slug no model answers to) its prompt builder."""
    from gpts.api import load
    from gpts.assistant import Assistant, gpt_slug

    try:
        slug = gpt_slug(model)
    except GptsError:  # no model of that name, and no GPT either unless the ready ones are not installed yet
        from gpts.cli.store import ensure_ready_gpts

        ensure_ready_gpts()
        slug = gpt_slug(model)
    if slug is None:
        return load(model, dtype), None
    assistant = Assistant.load(slug, dtype=dtype)
    return assistant.model, assistant.conversation


def metrics_table(rows: dict[str, object]) -> Table:
    table = Table("metric", "value")
    for name, value in rows.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@app.command("perplexity")
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
    from gpts.fileio import read_text

    texts = [read_text(file) for file in files]
    lm = load(model, dtype)
    with EventView(transient=True) as view:
        result = perplexity(lm, texts, context, stride, report=view)
    context = context or lm.config.context_length
    stride = stride or max(1, context // 2)
    if as_json:
        print(json.dumps({"model": model, "context": context, "stride": stride, **result.to_dict(),
                          "files": [{"file": str(f), **p.to_dict()} for f, p in zip(files, result.parts)]}))
        return
    print_plain(f"{model}: context {context}, stride {stride}")
    table = Table("file", "tokens", "bytes", "nll (nats/token)", "perplexity", "bits/byte")
    table.columns[0].overflow = "fold"
    named = list(zip(map(str, files), result.parts)) + ([("all", result)] if len(files) > 1 else [])
    for name, p in named:
        table.add_row(name, f"{p.tokens:,}", f"{p.bytes:,}", f"{p.nll:.4f}", f"{p.perplexity:.3f}",
                      f"{p.bits_per_byte:.4f}")
    out.print(table)


@app.command("classify")
def eval_classify(file: ExamplesArg, model: ModelOrGptOpt = "default", dtype: DtypeOpt = "float32",
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
    from gpts.evaluate import classify, plot_confusion
    from gpts.task import parse_labels

    if method not in ("loglik", "generate"):
        raise GptsError(f"Unknown method {method!r}.", "Use --method loglik or --method generate.")
    label_list = parse_labels(labels) if labels is not None else None
    lm, conversation = _load(model, dtype)
    with EventView(transient=True) as view:
        result = classify(lm, file, label_list, instructions, method, report=view, conversation=conversation)
    m = result.metrics
    if confusion_png is not None:
        plot_confusion(m, confusion_png)
    if as_json:
        print(json.dumps({"model": model, "method": method, **m}, ensure_ascii=False))
        return
    summary = {"examples": m["n"], "accuracy": m["accuracy"]}
    if method == "generate":
        summary["replies naming no label"] = m["unmatched"]
    print_plain(f"{model} on {file} ({method})")
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
        print_plain(f"Wrote {confusion_png}")


@app.command("choice")
def eval_choice(file: ExamplesArg, model: ModelOrGptOpt = "default", dtype: DtypeOpt = "float32",
                delimiter: Annotated[str, typer.Option(help="Put between the context and each choice.")] = " ",
                as_json: JsonOpt = False) -> None:
    """Multiple-choice accuracy on JSONL ({"context", "choices", "answer"}): acc and acc_norm, as lm-eval-harness."""
    from gpts.evaluate import choice

    lm, conversation = _load(model, dtype)
    with EventView(transient=True) as view:
        result = choice(lm, file, delimiter, report=view, conversation=conversation)
    if as_json:
        print(json.dumps({"model": model, "acc": result.acc, "acc_norm": result.acc_norm, "n": result.n}))
        return
    print_plain(f"{model} on {file}")
    out.print(metrics_table({"examples": result.n, "acc": result.acc, "acc_norm": result.acc_norm}))


@app.command("generate")
def eval_generate(file: ExamplesArg, model: ModelOrGptOpt = "default", dtype: DtypeOpt = "float32",
                  max_new_tokens: Annotated[int, typer.Option(help="New tokens per reply at most.")] = 64,
                  chat: Annotated[Optional[bool], typer.Option(
                      "--chat/--no-chat", help="Prompt as a chat user turn (default: when the model has a chat "
                                               "template) or as raw text.")] = None,
                  as_json: JsonOpt = False) -> None:
    """Exact-match and contains scores of greedy replies on JSONL ({"prompt", "answer"})."""
    from gpts.evaluate import generate_eval

    lm, conversation = _load(model, dtype)
    with EventView(transient=True) as view:
        result = generate_eval(lm, file, max_new_tokens, chat, report=view, conversation=conversation)
    if as_json:
        print(json.dumps({"model": model, "chat": result.chat, "exact_match": result.exact_match,
                          "contains": result.contains, "n": result.n, "outputs": result.outputs}, ensure_ascii=False))
        return
    print_plain(f"{model} on {file} ({'chat' if result.chat else 'raw prompt'})")
    out.print(metrics_table({"examples": result.n, "exact_match": result.exact_match, "contains": result.contains}))


@app.command("gpt")
def eval_gpt(slug: SlugArg,
             file: Annotated[Optional[Path], typer.Option(
                 help="Another evaluation set (default: the GPT's own, which is then recorded in the store).")] = None,
             dtype: DtypeOpt = "float32", as_json: JsonOpt = False) -> None:
    """Measure a custom GPT on its evaluation set (classification, generation or multiple choice, by its fields)
    and record the score with its version: `gpts list --sort score` ranks by it."""
    from gpts.assistant import Assistant, evaluate_gpt
    from gpts.store import record_evaluation

    assistant = Assistant.load(slug, dtype=dtype)
    with EventView(transient=True) as view:
        result = evaluate_gpt(assistant, file, view)
    if file is None:
        record_evaluation(slug, assistant.gpt.version, result["metric"], result["score"], result)
    if as_json:
        print(json.dumps({"gpt": slug, "version": assistant.gpt.version, **result}, ensure_ascii=False))
        return
    print_plain(f"{slug} version {assistant.gpt.version} on {'its evaluation set' if file is None else file} "
                f"({result['kind']}): {result['metric']} {result['score']:.4f} over {result['n']} examples"
                + (" (recorded)" if file is None else ""))
