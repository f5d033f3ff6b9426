"""`gpts create|list|show|search|edit|versions|restore|rm|rate|featured|trending|export|import`: custom GPTs in
the local store. Every command here answers without loading torch, except `create` and `edit` with knowledge files
(which cut them into the model's tokens) and the preview answer of `gpts create` alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from gpts.cli.common import JsonOpt, out, print_plain
from gpts.errors import GptsError
from gpts.events import Message
from gpts.terminal import EventView, err



def ensure_ready_gpts() -> None:
    """The GPTs that ship with gpts, put in the store the first time a command looks into it."""
    from gpts.store import install_ready_gpts

    with EventView(transient=True) as view:
        install_ready_gpts(view)


def _ready_slug(slug: str) -> str:
    ensure_ready_gpts()  # `gpts show gpts-tutor` works on the first day too
    return slug


SlugArg = Annotated[str, typer.Argument(help="The GPT's slug (see `gpts list`).", callback=_ready_slug)]

# The fields of a spec as flags, shared by `create` and `edit`.
NameOpt = Annotated[Optional[str], typer.Option(help="The GPT's name.")]
SlugOpt = Annotated[Optional[str], typer.Option(help="Its slug (default: from the name), a-z, 0-9 and -.")]
DescriptionOpt = Annotated[Optional[str], typer.Option(help="One line on what it does.")]
InstructionsOpt = Annotated[Optional[str], typer.Option(
    help="The system prompt; {{current_date}}, {{current_time}} and {{gpt_name}} are filled in.")]
ModelRefOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model reference (default: default).")]
KnowledgeOpt = Annotated[Optional[list[Path]], typer.Option(help="A knowledge file or folder (repeatable).")]
StarterOpt = Annotated[Optional[list[str]], typer.Option(help="A conversation starter (repeatable, at most 4).")]
ExamplesOpt = Annotated[Optional[Path], typer.Option(
    help='Example conversations: a JSONL file of {"messages": [...]}, OpenAI\'s fine-tuning format.')]
CategoryOpt = Annotated[Optional[str], typer.Option(help="writing, productivity, research, programming, education, "
                                                         "lifestyle or other.")]
TagOpt = Annotated[Optional[list[str]], typer.Option(help="A tag (repeatable).")]
SpecOpt = Annotated[Optional[Path], typer.Option(help="A spec file (YAML or JSON) with every field.")]


def _examples(path: Path | None) -> list[list[dict[str, str]]] | None:
    """Example conversations from OpenAI's fine-tuning format (system turns and weights have no place in them)."""
    if path is None:
        return None
    from gpts.fileio import read_jsonl

    conversations = []
    for line in read_jsonl(path):
        messages = line.value.get("messages") if isinstance(line.value, dict) else None
        if line.error or not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            problem = line.error or 'not {"messages": [{"role": ..., "content": "..."}, ...]}'
            raise GptsError(f"{path}, line {line.number}: {problem}.",
                            'Each line holds {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}.')
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages
                              if m["role"] != "system"])
    return conversations


def _flag_fields(name: str | None, slug: str | None, description: str | None, instructions: str | None,
                 model: str | None, starter: list[str] | None, examples: Path | None, category: str | None,
                 tag: list[str] | None) -> dict[str, Any]:
    fields = {"name": name, "slug": slug, "description": description, "instructions": instructions, "model": model,
              "conversation_starters": starter or None, "examples": _examples(examples), "category": category,
              "tags": tag or None}
    return {k: v for k, v in fields.items() if v is not None}


def create(spec: SpecOpt = None, name: NameOpt = None, slug: SlugOpt = None, description: DescriptionOpt = None,
           instructions: InstructionsOpt = None, model: ModelRefOpt = None, knowledge: KnowledgeOpt = None,
           starter: StarterOpt = None, examples: ExamplesOpt = None, category: CategoryOpt = None,
           tag: TagOpt = None, as_json: JsonOpt = False) -> None:
    """Make a custom GPT: from a spec file (--spec), from flags (--name, --instructions, ...), or, with neither,
    step by step with a preview answer at the end."""
    from gpts.spec import parse_spec, read_spec
    from gpts.store import create_gpt

    fields = _flag_fields(name, slug, description, instructions, model, starter, examples, category, tag)
    if spec is not None:
        if fields or knowledge:
            raise GptsError("--spec gives every field; it does not mix with the other flags.",
                            "Put the fields in the spec file, or leave out --spec.")
        parsed, base_dir = read_spec(spec)
    elif fields or knowledge:
        if "name" not in fields:
            raise GptsError("A GPT needs a name.", "Pass --name NAME (or --spec FILE).")
        parsed = parse_spec({**fields, "knowledge": [str(k) for k in knowledge or []]}, " from the flags")
        base_dir = Path.cwd()
    else:
        _create_step_by_step()
        return
    with EventView() as view:
        gpt = create_gpt(parsed, base_dir, view)
    _print_gpt(gpt, as_json, f"Created {gpt.slug}.")


def _create_step_by_step() -> None:
    """`gpts create` alone: ask for each field, create the GPT, answer its first starter as a preview."""
    from gpts.spec import parse_spec
    from gpts.store import create_gpt

    def ask(text: str, default: str = "") -> str:
        return typer.prompt(text, default=default, show_default=bool(default)).strip()

    err.print("[bold]A new custom GPT.[/] Press Enter to skip an optional field.")
    data: dict[str, Any] = {"name": ask("Name")}
    data["description"] = ask("Description (one line)", " ").strip()
    data["instructions"] = ask("Instructions (what it should do)")
    data["model"] = ask("Model", "default")
    knowledge = ask("Knowledge files or folders, separated by commas", " ")
    data["knowledge"] = [k.strip() for k in knowledge.split(",") if k.strip()]
    starter = ask("A conversation starter", " ")
    data["conversation_starters"] = [starter] if starter else []
    parsed = parse_spec(data, " as entered")
    with EventView() as view:
        gpt = create_gpt(parsed, Path.cwd(), view)
    _print_gpt(gpt, False, f"Created {gpt.slug}.")
    from gpts.assistant import Assistant

    question = starter or "Hello! What can you do?"
    err.print(f"[dim]Preview: {question}[/]", highlight=False)
    with err.status(f"Loading {gpt.spec.model}..."):
        assistant = Assistant.load(gpt.slug)
    print_reply(assistant.stream([], question), as_json=False)
    err.print(f"[dim]Talk with it: gpts run {gpt.slug}[/]")


def edit(slug: SlugArg, spec: SpecOpt = None, name: NameOpt = None, description: DescriptionOpt = None,
         instructions: InstructionsOpt = None, model: ModelRefOpt = None, knowledge: KnowledgeOpt = None,
         remove_knowledge: Annotated[Optional[list[str]], typer.Option(
             help="Drop a knowledge file by the name `gpts show` gives (repeatable).")] = None,
         starter: StarterOpt = None, examples: ExamplesOpt = None, category: CategoryOpt = None,
         tag: TagOpt = None, note: Annotated[str, typer.Option(help="What changed, kept with the version.")] = "edited",
         as_json: JsonOpt = False) -> None:
    """Make a new version of a GPT: from a whole spec file, or the current version with the flags' changes."""
    from gpts.spec import read_spec
    from gpts.store import edit_gpt

    fields = _flag_fields(name, None, description, instructions, model, starter, examples, category, tag)
    with EventView() as view:
        if spec is not None:
            if fields or knowledge or remove_knowledge:
                raise GptsError("--spec gives every field; it does not mix with the other flags.",
                                "Put the changes in the spec file, or leave out --spec.")
            parsed, base_dir = read_spec(spec)
            gpt = edit_gpt(slug, spec=parsed, base_dir=base_dir, note=note, report=view)
        else:
            gpt = edit_gpt(slug, fields, add_knowledge=knowledge or [], remove_knowledge=remove_knowledge or [],
                           note=note, report=view)
    _print_gpt(gpt, as_json, f"{slug} is now at version {gpt.version}.")


def _stars(gpt: Any) -> str:
    return f"{gpt.rating:.1f} ({gpt.ratings})" if gpt.ratings else "-"


def _score(gpt: Any) -> str:
    return f"{gpt.score['metric']} {gpt.score['score']:.3f}" if gpt.score else "-"


def _gpts_table(gpts: list[Any]) -> Table:
    """One row a GPT, its description under its name; columns that hold nothing yet (scores) are left out, so that
    the table fits a terminal of 80 columns."""
    columns = ["slug", "name", "category", "rating", "chats"] + (["score"] if any(g.score for g in gpts) else [])
    table = Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in table.columns:
        column.no_wrap = column.header != "name"
    for g in gpts:
        about = f"{escape(g.spec.name)}\n[dim]{escape(g.spec.description)}[/]" if g.spec.description else g.spec.name
        row = [g.slug, about, g.spec.category, _stars(g), str(g.conversations), _score(g)]
        table.add_row(*row[:len(columns)])
    return table


def list_(category: CategoryOpt = None,
          sort: Annotated[str, typer.Option(help="recent, rating, usage (conversations) or score (evaluation).")] = "recent",
          as_json: JsonOpt = False) -> None:
    """The GPTs in the store."""
    from gpts.store import list_gpts

    ensure_ready_gpts()
    gpts = list_gpts(category, sort)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps([g.to_dict() for g in gpts], ensure_ascii=False))
    elif gpts:
        out.print(_gpts_table(gpts))
    else:
        err.print("No GPTs" + (f" in {category}." if category else " yet. Make one with `gpts create`."))


def search(query: Annotated[str, typer.Argument(help="Words to look for.")], category: CategoryOpt = None,
           as_json: JsonOpt = False) -> None:
    """Find GPTs by name, description, instructions and tags (best first; name matches before the rest)."""
    from gpts.store import search_gpts

    ensure_ready_gpts()
    gpts = search_gpts(query, category)
    if as_json:
        print(json.dumps([g.to_dict() for g in gpts], ensure_ascii=False))
    elif gpts:
        out.print(_gpts_table(gpts))
    else:
        err.print(f"No GPT matches {query!r}.", markup=False, highlight=False)


def _print_gpt(gpt: Any, as_json: bool, headline: str = "") -> None:
    if as_json:
        print(json.dumps(gpt.to_dict(), ensure_ascii=False))
        return
    if headline:
        err.print(headline, markup=False, highlight=False)
    s = gpt.spec
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    version = f"{gpt.version}" + ("" if gpt.version == gpt.current_version else f" (current: {gpt.current_version})")
    rows = [("name", s.name), ("slug", gpt.slug), ("version", version), ("description", s.description),
            ("model", s.model), ("category", s.category), ("tags", ", ".join(s.tags)), ("author", s.author),
            ("visibility", s.visibility), ("rating", _stars(gpt)), ("conversations", str(gpt.conversations)),
            ("score", _score(gpt)), ("examples", str(len(s.examples))),
            ("knowledge", ", ".join(f"{f.name} ({f.chunks} chunks)" for f in gpt.knowledge) or "-"),
            ("starters", "\n".join(s.conversation_starters) or "-"), ("instructions", s.instructions.strip())]
    for key, value in rows:
        table.add_row(key, value, style=None)
    out.print(table, markup=False, highlight=False)


def show(slug: SlugArg, version: Annotated[Optional[int], typer.Option(help="A past version.")] = None,
         as_json: JsonOpt = False) -> None:
    """Everything about one GPT."""
    from gpts.store import get_gpt

    _print_gpt(get_gpt(slug, version), as_json)


def versions(slug: SlugArg, as_json: JsonOpt = False) -> None:
    """A GPT's versions, oldest first."""
    from gpts.store import gpt_versions

    rows = gpt_versions(slug)
    if as_json:
        print(json.dumps([v.to_dict() for v in rows]))
        return
    table = Table("version", "created", "note", "")
    for v in rows:
        table.add_row(str(v.number), v.created_at, v.note, "current" if v.current else "")
    out.print(table)


def restore(slug: SlugArg, version: Annotated[int, typer.Argument(help="The version to bring back.")]) -> None:
    """Make a new version equal to an old one."""
    from gpts.store import restore_gpt

    gpt = restore_gpt(slug, version)
    print_plain(f"{slug} is now at version {gpt.version}, equal to version {version}.")


def rm(slug: SlugArg, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Remove a GPT and all its versions (its conversations stay)."""
    from gpts.store import get_gpt, remove_gpt

    gpt = get_gpt(slug)
    if not yes and not typer.confirm(f"Remove {slug} ({gpt.current_version} version(s))?", err=True):
        raise typer.Exit(1)
    remove_gpt(slug)
    print_plain(f"Removed {slug}.")


def rate(slug: SlugArg, stars: Annotated[int, typer.Argument(help="1 to 5.")],
         review: Annotated[str, typer.Option(help="A few words on why.")] = "",
         user: Annotated[Optional[str], typer.Option(help="Who rates (default: $GPTS_USER, else your login).")] = None
         ) -> None:
    """Rate a GPT; rating it again replaces your rating."""
    from gpts.store import rate_gpt

    rating = rate_gpt(slug, stars, review, user)
    print_plain(f"{rating.user} rated {slug} {stars}/5. Average {rating.average:.1f} from {rating.count} rating(s).")


def featured(as_json: JsonOpt = False) -> None:
    """The featured GPTs: those that ship with gpts, and any marked featured."""
    from gpts.store import featured_gpts

    ensure_ready_gpts()
    gpts = featured_gpts()
    if as_json:
        print(json.dumps([g.to_dict() for g in gpts], ensure_ascii=False))
    elif gpts:
        out.print(_gpts_table(gpts))
    else:
        err.print("No featured GPTs: the ready ones have been removed. `gpts list` shows the rest.")


def trending(days: Annotated[int, typer.Option(help="The window, in days.")] = 7, as_json: JsonOpt = False) -> None:
    """The GPTs most used lately: conversations started and ratings given over the last days."""
    from gpts.store import trending_gpts

    rows = trending_gpts(days)
    if as_json:
        print(json.dumps([{**g.to_dict(), "activity": n} for g, n in rows], ensure_ascii=False))
        return
    if not rows:
        err.print(f"Nothing happened over the last {days} day(s).")
        return
    table = Table("slug", "name", "activity", "rating")
    for g, n in rows:
        table.add_row(g.slug, g.spec.name, str(n), _stars(g))
    out.print(table)


def export(slug: SlugArg, out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="The .gpt file to "
                                                                          "write (default: SLUG.gpt).")] = None,
           version: Annotated[Optional[int], typer.Option(help="A past version.")] = None,
           ollama: Annotated[Optional[Path], typer.Option(
               help="Instead: a folder for Ollama, with the model as GGUF and a Modelfile.")] = None) -> None:
    """Write a GPT to one .gpt file to share (spec, knowledge files, and its adapter if its model is one), or with
    --ollama to a GGUF file and Modelfile that `ollama create` takes."""
    from gpts.store import export_gpt, export_ollama

    if ollama is not None:
        if out_path is not None:
            raise GptsError("--ollama writes a folder; --out names a .gpt file.", "Pass one of them.")
        with EventView() as view:
            view(Message(f"Converting {slug}'s model to GGUF..."))
            folder = export_ollama(slug, ollama, version, view)
        print_plain(f"Wrote {folder}. Run it: ollama create {slug} -f {folder / 'Modelfile'} && ollama run {slug}")
        return
    print_plain(f"Wrote {export_gpt(slug, out_path, version)}")


def import_(source: Annotated[str, typer.Argument(
                help="A .gpt file, an Ollama Modelfile, or a GPT's URL on a gpts server: "
                     "http://HOST:PORT/v1/gpts/SLUG.", metavar="PATH_OR_URL")],
            as_slug: Annotated[Optional[str], typer.Option("--as", help="Import under this slug.")] = None,
            api_key: Annotated[Optional[str], typer.Option(
                envvar="GPTS_API_KEY", help="The server's API key, for a URL.")] = None) -> None:
    """Add a GPT to the store: from a .gpt file (every file in it checked first), an Ollama Modelfile, or another
    gpts server (`gpts serve`), so that a team can share one store."""
    from gpts.store import import_gpt, import_modelfile, is_bundle
    from gpts.store.bundles import import_gpt_url, is_url

    path = Path(source)
    with EventView() as view:
        if is_url(source):
            gpt = import_gpt_url(source, as_slug, api_key, view)
        elif path.is_file() and not is_bundle(path) and "modelfile" in path.name.lower():
            gpt = import_modelfile(path, as_slug, view)
        else:
            gpt = import_gpt(path, as_slug, view)
    print_plain(f"Imported {gpt.slug}. Talk with it: gpts run {gpt.slug}")


def print_reply(stream: Any, as_json: bool) -> Any:
    """Stream a reply to stdout, then its citations; returns the Reply."""
    if as_json:
        return stream.reply
    for text in stream:
        out.file.write(text)
        out.file.flush()
    out.file.write("\n")
    reply = stream.reply
    if reply.prompt.dropped_turns:
        err.print(f"[dim]The {reply.prompt.dropped_turns} oldest exchange(s) of this conversation no longer fit the "
                  "model's context and were left out.[/]")
    for i, c in enumerate(reply.citations, 1):
        err.print(f"[{i}] {c.where()}: \u201c{c.quote}\u201d", style="dim", markup=False, highlight=False)
    return reply
