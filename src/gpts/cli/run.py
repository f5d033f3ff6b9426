"""`gpts run` and `gpts conversations`: talking with a custom GPT, and the conversations the store keeps."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from gpts.cli.common import DtypeOpt, JsonOpt, out, print_plain, sampling_flags
from gpts.cli.store import SlugArg, print_reply
from gpts.errors import GptsError
from gpts.terminal import err, print_error


@sampling_flags
def run(slug: SlugArg,
        message: Annotated[Optional[str], typer.Option(help="Answer this one message, print the reply, exit.")] = None,
        conversation: Annotated[Optional[str], typer.Option(help="Continue this conversation (see `gpts "
                                                                 "conversations`).")] = None,
        version: Annotated[Optional[int], typer.Option(help="Talk with a past version.")] = None,
        dtype: DtypeOpt = "float32", as_json: JsonOpt = False, sampling: dict[str, Any] | None = None) -> None:
    """Talk with a custom GPT: an interactive chat, or one answer with --message. Answers from knowledge files come
    with citations; the conversation is kept in the store."""
    from gpts.assistant import Assistant
    from gpts.store import add_turn, get_conversation, start_conversation

    if as_json and message is None:
        raise GptsError("--json prints one answer.", "Pass --message TEXT with --json.")
    if message is not None and not message.strip():
        raise GptsError("The message is blank.", "Pass some text with --message.")
    history: list[dict[str, str]] = []
    if conversation is not None:
        thread = get_conversation(conversation)
        if thread.slug != slug:
            raise GptsError(f"Conversation {conversation} is with {thread.slug}, not {slug}.",
                            f"Continue it with: gpts run {thread.slug} --conversation {conversation}")
        history = thread.history()
    with err.status(f"Loading {slug}..."):
        assistant = Assistant.load(slug, version, dtype)
    conversation_id = conversation

    def answer(text: str) -> None:
        nonlocal conversation_id
        reply = print_reply(assistant.stream(history, text, **sampling), as_json)
        if conversation_id is None:
            conversation_id = start_conversation(assistant.gpt, conn=assistant.conn)  # named by its first question
        citations = [c.to_dict() for c in reply.citations]
        add_turn(conversation_id, text, reply.text, assistant.gpt.version, citations, reply.usage, assistant.conn)
        history.extend([{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}])
        if as_json:
            print(json.dumps({"gpt": slug, "version": assistant.gpt.version, "conversation_id": conversation_id,
                              **reply.to_dict()}, ensure_ascii=False))

    if message is not None:
        answer(message)
        return
    spec = assistant.spec
    err.print(f"[bold]{spec.name}[/] (version {assistant.gpt.version}, {spec.model}). /exit or Ctrl-D leaves.",
              highlight=False)
    if spec.description:
        err.print(spec.description, style="dim", markup=False, highlight=False)
    for i, starter in enumerate(spec.conversation_starters, 1):
        err.print(f"  /{i}  {starter}", style="dim", markup=False, highlight=False)
    while True:
        try:
            text = out.input("[bold green]> [/]")
        except EOFError:
            out.print()
            break
        command = text.strip()
        if command in ("/exit", "/quit"):
            break
        if command[1:].isdigit() and command.startswith("/") and 1 <= int(command[1:]) <= len(spec.conversation_starters):
            text = spec.conversation_starters[int(command[1:]) - 1]
            err.print(text, style="dim", markup=False, highlight=False)
        if text.strip():
            try:
                answer(text)
            except GptsError as e:  # one message too long for the context does not end the conversation
                print_error(e.problem, e.fix)
    if conversation_id:
        err.print(f"[dim]Continue later: gpts run {slug} --conversation {conversation_id}[/]")


def conversations(args: Annotated[Optional[list[str]], typer.Argument(
        help="Nothing or a GPT's slug: list them. show ID: one, whole. rm ID: remove one.", show_default=False)] = None,
        as_json: JsonOpt = False) -> None:
    """The conversations kept in the store: `gpts conversations [SLUG]`, `gpts conversations show ID`,
    `gpts conversations rm ID`."""
    from gpts.store import get_conversation, list_conversations, remove_conversation

    args = args or []
    if args[:1] in (["show"], ["rm"]):
        if len(args) != 2:
            raise GptsError(f"`gpts conversations {args[0]}` takes one conversation id.",
                            f"e.g. gpts conversations {args[0]} 3f2a9c1b7e4d")
        if args[0] == "rm":
            remove_conversation(args[1])
            print_plain(f"Removed conversation {args[1]}.")
            return
        thread = get_conversation(args[1])
        if as_json:
            print(json.dumps(thread.to_dict(), ensure_ascii=False))
            return
        err.print(f"[bold]{thread.title}[/] with {thread.slug}, {thread.created_at}", highlight=False)
        for m in thread.messages:
            who = "you" if m["role"] == "user" else thread.slug + (f" v{m['version']}" if m.get("version") else "")
            out.print(f"[bold]{who}:[/] ", end="", highlight=False)
            print_plain(m["content"])
            for c in m.get("citations") or []:
                err.print(f"  {c['file']}: \u201c{c['quote']}\u201d", style="dim", markup=False, highlight=False)
        return
    if len(args) > 1:
        raise GptsError("`gpts conversations` takes at most one GPT slug.", "e.g. gpts conversations gpts-tutor")
    threads = list_conversations(args[0] if args else None)
    if args and not threads:
        from gpts.store import get_gpt

        get_gpt(args[0])  # a slug that names no GPT is an error; a GPT that has had no conversation is not
    if as_json:
        print(json.dumps([t.to_dict() for t in threads], ensure_ascii=False))
        return
    if not threads:
        err.print("No conversations yet. Start one with `gpts run SLUG`.")
        return
    table = Table("id", "gpt", "title", "turns", "updated")
    for t in threads:
        table.add_row(t.id, t.slug, t.title, str(t.turns), t.updated_at)
    out.print(table)
