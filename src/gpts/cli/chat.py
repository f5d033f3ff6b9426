"""`gpts generate` and `gpts chat`: text from a model, raw or as a conversation."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from gpts.cli.common import DtypeOpt, ModelOpt, out, sampling_flags
from gpts.errors import GptsError
from gpts.terminal import err


@sampling_flags
def generate(prompt: Annotated[str, typer.Argument(help="The text to continue.")],
             model: ModelOpt = "default", dtype: DtypeOpt = "float32",
             num_return_sequences: Annotated[int, typer.Option("--num-return-sequences", "-n",
                                                               help="Continuations to generate.")] = 1,
             stream_: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with tokens and timings.")] = False,
             sampling: dict[str, Any] | None = None) -> None:
    """Continue PROMPT (raw text, no chat template); print only the continuation(s)."""
    from gpts.api import load

    if stream_ and (as_json or num_return_sequences > 1):
        raise GptsError("--stream prints one continuation as plain text.", "Drop --stream, or --json / -n.")
    lm = load(model, dtype)
    events = lm.stream(prompt, num_return_sequences=num_return_sequences, **sampling)
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


@sampling_flags
def chat(model: ModelOpt = "default", dtype: DtypeOpt = "float32",
         system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
         message: Annotated[Optional[str], typer.Option(help="Answer this one message, print the reply, exit.")] = None,
         sampling: dict[str, Any] | None = None) -> None:
    """Talk with a model: an interactive multi-turn chat, or one reply with --message."""
    from gpts.api import load

    with err.status(f"Loading {model}..."):
        lm = load(model, dtype)
    history = [{"role": "system", "content": system}] if system else []

    def reply(text: str) -> None:
        events = lm.chat_stream([*history, {"role": "user", "content": text}], **sampling)
        for event in events:
            out.file.write(event.text)
            out.file.flush()
        out.file.write("\n")
        history.extend([{"role": "user", "content": text},
                        {"role": "assistant", "content": events.completions[0].text}])

    if message is not None:
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
