"""What the commands share: the console, option types, the sampling flags, and running a long job."""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpts.events import Message, Report
from gpts.interrupt import StopRequest
from gpts.terminal import EventView, print_message

out = Console()  # results go to stdout; progress, warnings and errors to stderr (gpts.terminal)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model reference: a name, a path, or hf:ORG/NAME[@REV].")]
ModelOrGptOpt = Annotated[str, typer.Option("--model", "-m", help="Model reference (a name, a path, hf:ORG/NAME[@REV]) "
                                                              "or a custom GPT (its slug, or gpt:SLUG).")]
DtypeOpt = Annotated[str, typer.Option(help="Compute dtype: float32 or bfloat16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def print_plain(text: str) -> None:
    """Text that holds paths or user input: never markup, never cut."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def summary_table(summary: dict[str, Any], title: str) -> Table:
    table = Table("", "", show_header=False, box=None, title=title, title_justify="left")
    for key, value in summary.items():
        table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else str(value))
    return table


# -- the sampling flags, declared once ----------------------------------------------------------------------------


def _flag(name: str, kind: Any, help: str) -> inspect.Parameter:
    annotation = Annotated[Optional[kind], typer.Option(help=help)]  # None means "not given": the model's default
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


SAMPLING_FLAGS = [
    _flag("max_new_tokens", int, "New tokens to generate at most."),
    _flag("max_length", int, "Prompt + new tokens at most (max-new-tokens wins)."),
    _flag("temperature", float, "0 is greedy; higher is more random."),
    _flag("top_k", int, "Sample from the k most likely tokens (0: off)."),
    _flag("top_p", float, "Sample from the smallest set with this total probability."),
    _flag("min_p", float, "Drop tokens below this fraction of the top probability."),
    _flag("repetition_penalty", float, "Penalize tokens already seen (1: off)."),
    _flag("stop", list[str], "Stop before this text (repeatable). \\n, \\t and \\\\ stand for a newline, a tab and a "
                             "backslash."),
    _flag("seed", int, "Random seed: the same seed gives the same text."),
    inspect.Parameter("ignore_eos", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option(help="Keep generating past the end-of-sequence token.")]),
    inspect.Parameter("truncate", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option(help="Drop the start of a prompt that does not fit the context.")]),
]


def sampling_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every sampling flag; it receives those given as one dict of GenerationConfig fields,
    its `sampling` argument (a flag left out is absent, so the model's own default applies)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for name, p in signature.parameters.items() if name != "sampling"]
    names = [p.name for p in SAMPLING_FLAGS]

    @functools.wraps(command)
    def with_sampling(**kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in names}
        given["stop"] = [unescape(s) for s in given["stop"] or []] or None
        given["ignore_eos"] = given["ignore_eos"] or None
        given["truncate"] = given["truncate"] or None
        command(**kwargs, sampling={k: v for k, v in given.items() if v is not None})

    parameters = own + SAMPLING_FLAGS
    with_sampling.__signature__ = signature.replace(parameters=parameters)  # what typer reads
    with_sampling.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_sampling


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """A shell passes `--stop "\\n"` as a backslash and an n; a newline is what people mean by it."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m[1]], text)


# -- long jobs ----------------------------------------------------------------------------------------------------


def run_job(job: Callable[[Report, StopRequest], dict[str, Any]], resume: str) -> tuple[dict[str, Any], StopRequest]:
    """Run a training job with its events drawn on stderr. Ctrl-C or SIGTERM stops it at its next step after a
    checkpoint (the job says so, and this says how to go on); the caller exits with `stop.exit_code` when
    `stop.is_set()`."""
    stop = StopRequest()
    with EventView() as view:
        summary = job(view, stop)
    if stop.is_set():
        under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
        print_message(Message("Continue with the same torchrun command and --resume." if under_torchrun else
                              f"Continue with: {resume}"))
    return summary, stop
