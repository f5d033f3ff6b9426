"""`gpts finetune` and `gpts lora merge`: a model taught from examples, and an adapter folded into its base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpts.cli.common import ModelOpt, out, print_plain, run_job, summary_table
from gpts.cli.store import SlugArg
from gpts.errors import GptsError


def auto_or_number(name: str, text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise GptsError(f"--{name.replace('_', '-')} {text!r} is neither auto nor a number.",
                        f"Give --{name.replace('_', '-')} auto or a number.") from None


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
             dtype: Annotated[str, typer.Option(
                 help="Compute dtype: auto (bfloat16 where the processor computes it natively, else float32), "
                      "bfloat16 or float32.")] = "auto",
             seed: Annotated[Optional[int], typer.Option(help="Random seed of the data order and the adapter.")] = None,
             resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
             json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False) -> None:
    """Fine-tune a model on your examples (LoRA or full); the run directory is a model reference. Ctrl-C saves a
    checkpoint."""
    from gpts.finetune import FinetuneConfig, finetune as run_finetuning
    from gpts.task import parse_labels

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
    summary, stop = run_job(lambda report, stop: run_finetuning(config, report, stop),
                            resume=f"gpts finetune --out {out_dir} --resume")
    if json_out:
        out.print_json(json.dumps(summary))
    else:
        out.print(summary_table(summary, "fine-tuning summary"))
    if stop.is_set():
        raise typer.Exit(stop.exit_code)


lora_app = typer.Typer(no_args_is_help=True, help="LoRA adapters.")


@lora_app.command("merge")
def lora_merge(adapter: Annotated[str, typer.Argument(help="A LoRA adapter directory (a fine-tuning run).")],
               out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the merged model.")],
               force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False) -> None:
    """Fold a LoRA adapter into its base model: a plain checkpoint, as fast as the base."""
    from gpts.api import merge_adapter

    merge_adapter(adapter, out_dir, overwrite=force)
    print_plain(f"Merged {adapter} into {out_dir}")


def tune(slug: SlugArg,
         data: Annotated[Optional[Path], typer.Option(
             help='More to learn from: chats ({"messages": [...]}) or {"text", "label"} rows (default: the GPT\'s '
                  'examples).')] = None,
         n_epochs: Annotated[str, typer.Option(help="auto or a whole number.")] = "auto",
         learning_rate_multiplier: Annotated[str, typer.Option(help="auto or a number (times 1e-3).")] = "auto",
         max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps.")] = None,
         json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """LoRA-tune a custom GPT's model on its examples, measure it before and after on its evaluation set, and make
    a new version whose model is the adapter."""
    from gpts.tune import tune_gpt

    result, _ = run_job(lambda report, stop: tune_gpt(
        slug, data, report, stop, n_epochs=auto_or_number("n_epochs", n_epochs), max_steps=max_steps,
        learning_rate_multiplier=auto_or_number("learning_rate_multiplier", learning_rate_multiplier)),
        resume=f"gpts tune {slug}")
    if json_out:
        print(json.dumps({k: v for k, v in result.items() if k != "summary"}, ensure_ascii=False))
        return
    scores = {f"{name} ({r['metric']})": r["score"] for name, r in (("before", result["before"]),
                                                                    ("after", result["after"])) if r}
    out.print(summary_table({"examples learned": result["examples"], **scores, "new version": result["version"]},
                            f"{slug} tuned"))
    print_plain(f"The new version's model is the adapter in {result['adapter']}")
