"""The store and its conversations over HTTP: the functions behind `gpts create|list|show|edit|...` (gpts.store),
answering in JSON. Nothing here is a second implementation: each route parses, calls the store, shapes the reply.

    GET    /v1/gpts                              the GPTs: ?category=C, ?sort=recent|rating|usage|score
    GET    /v1/gpts?q=WORDS                      search by name, description, instructions, tags; ?category=C
    GET    /v1/gpts?featured=true                the featured GPTs, best rated first
    GET    /v1/gpts?sort=trending&days=7         the GPTs most used lately; each carries its `activity`
    POST   /v1/gpts                              create from a JSON body of spec fields (gpts.spec, as in a spec
                                                 file); knowledge files are uploaded to .../knowledge
    POST   /v1/gpts/import                       create from a .gpt bundle: multipart `file` [, `slug` to take]
    GET    /v1/gpts/{slug}[?version=N]           one GPT, at its current version or version N
    PATCH  /v1/gpts/{slug}                       a new version with these spec fields changed [, "note": why]
    DELETE /v1/gpts/{slug}                       the GPT and its versions (its conversations stay)
    GET    /v1/gpts/{slug}/versions              its versions, oldest first
    POST   /v1/gpts/{slug}/versions/{n}/restore  a new version equal to version n
    POST   /v1/gpts/{slug}/knowledge             multipart: `file` (repeatable) [, `note`]: a new version with these
                                                 knowledge files (a file of a name it has replaces that one)
    DELETE /v1/gpts/{slug}/knowledge/{name}      a new version without that knowledge file
    POST   /v1/gpts/{slug}/ratings               {"stars": 1-5, "review": "...", "user": "..."}: rating again replaces
    GET    /v1/gpts/{slug}/export[?version=N]    the .gpt bundle (application/zip), what `gpts import URL` installs
    POST   /v1/gpts/{slug}/evaluation            multipart: `file` [, `note`]: a new version with this evaluation set
                                                 (JSONL rows: {"text", "label"}, {"prompt", "answer"} or {"context",
                                                 "choices", "answer"}), replacing the one it had
    POST   /v1/gpts/{slug}/evaluate              score the current version on its evaluation set (`gpts eval gpt`)
                                                 and record it: the GPT's `score` is this
    POST   /v1/gpts/{slug}/tune                  {"n_epochs", "batch_size", "learning_rate_multiplier", "max_steps"},
                                                 all optional: `gpts tune`, followed as server-sent events
    GET    /v1/gpt_spec                          what a spec holds: its JSON schema, the categories, the limits
    GET    /v1/conversations[?gpt=SLUG]          conversations, latest first (without their messages); ?gpt= takes
                                                 a model's id as well
    POST   /v1/conversations                     {"model": ID, "title": "..."}: a new conversation with a model or a
                                                 GPT (its slug); untitled ("") until its first question names it
    GET    /v1/conversations/{id}                one conversation, with its messages
    PATCH  /v1/conversations/{id}                {"title": "..."}: renamed
    POST   /v1/conversations/{id}/turns          {"user", "assistant", "citations", "usage", "keep"}: a question and
                                                 its answer, after the first `keep` turns (default: all of them; fewer
                                                 replace the later ones: a regenerated answer, an edited question)
    DELETE /v1/conversations/{id}

Objects are the CLI's `--json` objects with OpenAI's `object` and `id` fields added (times are ISO 8601, UTC):
    {"object": "gpt", "id": SLUG, "slug", "version", "current_version", "spec", "files", "created_at", "updated_at",
     "builtin", "featured", "rating", "ratings", "conversations", "score"}
    {"object": "gpt.version", "version", "created_at", "note", "current"}
    {"object": "gpt.rating", "slug", "user", "stars", "review", "average", "count"}
    {"object": "gpt.evaluation", "slug", "version", "kind", "metric", "score", "n", "details"}
    {"object": "gpt_spec", "schema", "categories", "max_instructions", "max_starters", "visibilities",
     "template_variables"}
    {"object": "conversation", "id", "slug", "title", "created_at", "updated_at", "turns"[, "messages"]}
    {"object": "list", "data": [...]}, {"object": "gpt.deleted" | "conversation.deleted", "id", "deleted": true}
A conversation's messages are {"role": "user", "content", "at"} and {"role": "assistant", "content", "at", "version",
"citations": [{"file", "chunk", "pages" | "lines", "quote"}], "usage"}; `version` is the GPT version that answered
(null with a model). A turn's citations may come as the chat answer's annotations ({"type": "file_citation",
"file_citation": {"filename", ...}}): they are kept as the others are.

A tune's events are `data: {"type": "message", "text", "level"}` and `data: {"type": "progress", "task",
"completed", "total", "unit", "metrics", "done"}` lines (gpts.events) while it runs; the last is `data: {"type":
"result", "version", "adapter", "examples", "before", "after"}` (before and after: the evaluations, null without an
evaluation set) or `data: {"type": "error", "error": {...}}`, then `data: [DONE]`. A client that closes the stream
stops the tuning at its next step, and the GPT stays as it was.

Errors are OpenAI's (gpts.server.errors): an unknown GPT, version, file or conversation 404; an invalid spec 400
naming the field as `param`; a slug that is taken 409; an upload over the server's upload limit 413.

Uploads (the routes marked `accepts_upload`) have the server's upload limit, larger than other bodies'. An upload
is copied to a file this module names, in a temporary folder in the store (an export is written to one too), gone
when the request ends: a client's file name is only the name a knowledge file is cited by, and errors name the
upload as the client did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, get_args

from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from starlette.types import Receive, Scope, Send

from gpts.assistant import Assistant, evaluate_gpt
from gpts.errors import GptsError, NotFoundError, naming
from gpts.events import Report
from gpts.interrupt import StopRequest
from gpts.server.errors import bad_request, error_body, from_gpts_error
from gpts.server.protocol import TuneRequest, sse
from gpts.server.security import accepts_upload
from gpts.spec import CATEGORIES, MAX_INSTRUCTIONS, MAX_STARTERS, TEMPLATE_VARIABLES, GptSpec, evaluation_kind
from gpts.store import (Gpt, add_turn, create_gpt, edit_gpt, export_gpt, featured_gpts, get_conversation, get_gpt,
                        gpt_versions, import_gpt, list_conversations, list_gpts, parse_spec, rate_gpt,
                        record_evaluation, remove_conversation, remove_gpt, rename_conversation, restore_gpt,
                        search_gpts, start_conversation, trending_gpts)
from gpts.store.catalogue import FileSource
from gpts.store.db import connect, store_dir
from gpts.tune import tune_gpt

if TYPE_CHECKING:
    from gpts.api import LoadedModel

log = logging.getLogger("gpts.server")
router = APIRouter()

_COPY_CHUNK = 1024 * 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")


def _store() -> Iterator[sqlite3.Connection]:
    """One store connection per request, closed when it ends."""
    with closing(connect()) as conn:
        yield conn


Store = Annotated[sqlite3.Connection, Depends(_store)]


def _gpt(gpt: Gpt) -> dict[str, Any]:
    return {"object": "gpt", "id": gpt.slug, **gpt.to_dict()}


def _list(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data}


def _deleted(kind: str, id_: str) -> dict[str, Any]:
    return {"object": f"{kind}.deleted", "id": id_, "deleted": True}


# -- GPTs --------------------------------------------------------------------------------------------------------


def _alone(what: str, **others: Any) -> None:
    """Refuse the query parameters that `what` does not combine with, naming the first one given."""
    given = next((name for name, value in others.items() if value is not None), None)
    if given is not None:
        raise bad_request(f"{given} does not combine with {what}; leave one of them out.", given)


@router.get("/v1/gpts")
def list_(conn: Store, q: str | None = None, category: str | None = None, sort: str | None = None,
          featured: bool = False, days: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    if featured:
        _alone("featured=true", q=q, category=category, sort=sort, days=days)
        return _list([_gpt(g) for g in featured_gpts(conn)])
    if q is not None:
        _alone("q (search results come best match first)", sort=sort, days=days)
        return _list([_gpt(g) for g in search_gpts(q, category, conn)])
    if sort == "trending":
        _alone("sort=trending", category=category)
        return _list([{**_gpt(g), "activity": n} for g, n in trending_gpts(days or 7, conn)])
    _alone("this sort (days is the window of sort=trending)", days=days)
    return _list([_gpt(g) for g in list_gpts(category, sort or "recent", conn)])  # type: ignore[arg-type]


@router.post("/v1/gpts")
def create(spec: dict[str, Any], conn: Store) -> dict[str, Any]:
    """A GPT from a spec's fields, as a spec file holds them."""
    for field in ("knowledge", "evaluation"):
        if spec.get(field):
            raise bad_request(f"A spec sent to the server cannot name {field} files by path: the server does not "
                              "read its own disk for a client. Create the GPT, then upload its knowledge files to "
                              "POST /v1/gpts/{slug}/knowledge, or upload a .gpt bundle to POST /v1/gpts/import.", field)
    return _gpt(create_gpt(parse_spec(spec, " in the request body"), conn=conn))


@router.post("/v1/gpts/import")
@accepts_upload
def import_(file: Annotated[UploadFile, File()], slug: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    """A GPT from a .gpt bundle (`gpts export`, or GET /v1/gpts/{slug}/export on any gpts server)."""
    with _upload_folder() as folder:
        path = folder / "upload.gpt"
        _save(file, path)
        with naming({path: file.filename or "the uploaded bundle"}):
            return _gpt(import_gpt(path, slug or None))


@router.get("/v1/gpts/{slug}")
def retrieve(slug: str, conn: Store, version: int | None = None) -> dict[str, Any]:
    return _gpt(get_gpt(slug, version, conn))


@router.patch("/v1/gpts/{slug}")
def edit(slug: str, changes: dict[str, Any], conn: Store) -> dict[str, Any]:
    """Spec fields to change; the rest stay as they are."""
    note = changes.pop("note", "edited")
    if not isinstance(note, str):
        raise bad_request("note is a few words on what changed, as a string.", "note")
    if "slug" in changes:
        raise bad_request("A GPT's slug does not change. Export it and import the bundle under another slug.",
                          "slug")
    for field in ("knowledge", "evaluation"):
        if field in changes:
            raise bad_request(f"{field} files are uploaded, not named: POST them to /v1/gpts/{slug}/knowledge, and "
                              f"remove one with DELETE /v1/gpts/{slug}/knowledge/NAME.", field)
    return _gpt(edit_gpt(slug, changes, note=note, conn=conn))


@router.delete("/v1/gpts/{slug}")
def delete(slug: str, conn: Store) -> dict[str, Any]:
    remove_gpt(slug, conn)
    return _deleted("gpt", slug)


@router.get("/v1/gpts/{slug}/versions")
def versions(slug: str) -> dict[str, Any]:
    return _list([{"object": "gpt.version", **v.to_dict()} for v in gpt_versions(slug)])


@router.post("/v1/gpts/{slug}/versions/{number}/restore")
def restore(slug: str, number: int, conn: Store) -> dict[str, Any]:
    return _gpt(restore_gpt(slug, number, conn))


@router.post("/v1/gpts/{slug}/knowledge")
@accepts_upload
def add_knowledge(slug: str, file: Annotated[list[UploadFile], File()], conn: Store,
                  note: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    names = [_cited_name(upload) for upload in file]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise bad_request(f"Two uploaded files are both named {twice!r}.", "file")
    has = {f.name for f in get_gpt(slug, conn=conn).knowledge}
    with _upload_folder() as folder:
        paths = [folder / f"{i}{_suffix(name)}" for i, name in enumerate(names)]  # the suffix says the format
        for upload, path in zip(file, paths):
            _save(upload, path)
        with naming(dict(zip(paths, names))):
            return _gpt(edit_gpt(slug, remove_knowledge=has & set(names), note=note or f"knowledge: {', '.join(names)}",
                                 files=[FileSource("knowledge", n, p) for n, p in zip(names, paths)], conn=conn))


@router.delete("/v1/gpts/{slug}/knowledge/{name:path}")
def remove_knowledge(slug: str, name: str, conn: Store) -> dict[str, Any]:
    return _gpt(edit_gpt(slug, remove_knowledge=[name], note=f"knowledge: removed {name}", conn=conn))


class RatingRequest(BaseModel):
    stars: int = Field(ge=1, le=5, strict=True)
    review: str = ""
    user: str | None = Field(None, min_length=1, max_length=100)  # default: the user the server runs as


@router.post("/v1/gpts/{slug}/ratings")
def rate(slug: str, body: RatingRequest, conn: Store) -> dict[str, Any]:
    return {"object": "gpt.rating", **rate_gpt(slug, body.stars, body.review, body.user, conn).to_dict()}


@router.get("/v1/gpts/{slug}/export")
def export(slug: str, version: int | None = None) -> FileResponse:
    folder = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_store_dir()))
    try:
        path = export_gpt(slug, folder / f"{slug}.gpt", version)
    except BaseException:
        shutil.rmtree(folder)
        raise
    return _TemporaryFileResponse(path, folder, media_type="application/zip", filename=path.name)


class _TemporaryFileResponse(FileResponse):
    """A file in a temporary folder, which goes when the response ends, however it ends: a background task would
    not run for a client that went away."""

    def __init__(self, path: Path, folder: Path, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.folder = folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)  # not awaited: a cancelled request would skip it


@router.get("/v1/gpt_spec")
def gpt_spec() -> dict[str, Any]:
    """What a builder needs to know of a spec: its fields (JSON Schema) and the values and limits it checks."""
    return {"object": "gpt_spec", "schema": GptSpec.model_json_schema(), "categories": list(CATEGORIES),
            "max_instructions": MAX_INSTRUCTIONS, "max_starters": MAX_STARTERS,
            "visibilities": list(get_args(GptSpec.model_fields["visibility"].annotation)),
            "template_variables": list(TEMPLATE_VARIABLES)}


# -- measuring and tuning ----------------------------------------------------------------------------------------


@router.post("/v1/gpts/{slug}/evaluation")
@accepts_upload
def set_evaluation(slug: str, file: Annotated[UploadFile, File()], conn: Store,
                   note: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    name = _cited_name(file)
    current = get_gpt(slug, conn=conn)
    # The whole spec and file list of the current version, with this set for its evaluation set: spec fields name
    # no files (the files are given), so nothing is read from disk again.
    spec = current.spec.model_copy(update={"knowledge": [], "evaluation": None})
    kept = [FileSource(f.kind, f.name, sha256=f.sha256) for f in current.files if f.kind != "evaluation"]
    with _upload_folder() as folder:
        path = folder / f"evaluation{_suffix(name)}"
        _save(file, path)
        with naming({path: name}):
            evaluation_kind(path)  # a set that could never be scored is refused now, naming the upload
            return _gpt(edit_gpt(slug, spec=spec, files=[*kept, FileSource("evaluation", name, path)],
                                 note=note or f"evaluation: {name}", conn=conn))


@router.post("/v1/gpts/{slug}/evaluate")
async def evaluate(slug: str, request: Request) -> dict[str, Any]:
    """The current version measured with the model the server serves it with (loaded once, shared with its chats)."""
    gpt = await asyncio.to_thread(get_gpt, slug)
    if gpt.file("evaluation") is None:
        raise bad_request(f"{slug} has no evaluation set to be measured on. Upload one (a JSONL file) to "
                          f"POST /v1/gpts/{slug}/evaluation first.", code="no_evaluation_set")
    target = await request.app.state.serving.target(slug)
    return await asyncio.to_thread(_evaluate, gpt, target.backend.model)


def _evaluate(gpt: Gpt, model: LoadedModel) -> dict[str, Any]:
    with closing(connect()) as conn:
        result = evaluate_gpt(Assistant(gpt, model, conn))
        record_evaluation(gpt.slug, gpt.version, result["metric"], result["score"], result, conn)
    return {"object": "gpt.evaluation", "slug": gpt.slug, "version": gpt.version, **result}


@router.post("/v1/gpts/{slug}/tune")
async def tune(slug: str, body: Annotated[TuneRequest | None, Body()] = None) -> StreamingResponse:
    """LoRA-tune the GPT's model on its examples (`gpts tune`: a new version whose model is the adapter, measured
    before and after when it has an evaluation set), in a worker thread, its events streamed as they come."""
    await asyncio.to_thread(get_gpt, slug)  # an unknown GPT is a 404, before the stream starts
    options = (body or TuneRequest()).model_dump(exclude_none=True)

    def run(report: Report, stop: StopRequest) -> dict[str, Any]:
        result = tune_gpt(slug, None, report, stop, **options)
        return {k: v for k, v in result.items() if k != "summary"}  # the run's own figures: the events had them

    return StreamingResponse(_job_events(run), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _job_events(work: Callable[[Report, StopRequest], dict[str, Any]]) -> AsyncIterator[str]:
    """A job run in a worker thread, as server-sent events: each event it reports, then its result or its error,
    then [DONE]. A client that goes away (Starlette then cancels this generator) stops the job at its next step."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stop = StopRequest()

    def send(item: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            send({"type": "result", **work(lambda event: send(event.to_dict()), stop)})
        except GptsError as e:
            error = from_gpts_error(e)
            send({"type": "error", **error_body(error.status, error.message, error.param, error.code)})
        except Exception as e:
            log.exception("a job failed", exc_info=e)
            send({"type": "error", **error_body(500, f"Internal error: {type(e).__name__}. The server log has the "
                                                     "details.")})

    loop.run_in_executor(None, run)
    try:
        while (item := await queue.get())["type"] not in ("result", "error"):
            yield sse(json.dumps(item))
        yield sse(json.dumps(item))
        yield sse("[DONE]")
    finally:
        stop.set()  # the job is over, or nobody is listening any more


# -- conversations -----------------------------------------------------------------------------------------------

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)  # a model's id or a GPT's slug, as /v1/models lists them
    title: Title | None = None


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str  # may be empty: an answer stopped before its first word
    citations: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] = Field(default_factory=dict)
    keep: int | None = Field(None, ge=0)

    @field_validator("user")
    @classmethod
    def _asked(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question must not be blank")
        return value

    @field_validator("citations")
    @classmethod
    def _as_stored(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A chat answer's annotations, as the store keeps citations: {"file", "chunk", "pages" | "lines", "quote"}."""
        stored = []
        for c in value:
            if c.get("type") == "file_citation" and isinstance(c.get("file_citation"), dict):
                place = dict(c["file_citation"])
                c = {"file": place.pop("filename", None), **place}
            stored.append(c)
        return stored


def _conversation(conversation_id: str, conn: sqlite3.Connection) -> dict[str, Any]:
    return {"object": "conversation", **get_conversation(conversation_id, conn).to_dict()}


@router.get("/v1/conversations")
def conversations(conn: Store, gpt: str | None = None) -> dict[str, Any]:
    listed = []
    for c in list_conversations(gpt, conn):
        item = c.to_dict()
        del item["messages"]  # not read for a list: GET /v1/conversations/{id} has them
        listed.append({"object": "conversation", **item})
    return _list(listed)


@router.post("/v1/conversations")
def new_conversation(body: NewConversation, request: Request, conn: Store) -> dict[str, Any]:
    entry = request.app.state.serving.entry(body.model)  # a 404 for a model this server does not serve
    with_ = get_gpt(entry.gpt, conn=conn) if entry.gpt is not None else entry.id
    return _conversation(start_conversation(with_, body.title, conn), conn)


@router.get("/v1/conversations/{conversation_id}")
def conversation(conversation_id: str, conn: Store) -> dict[str, Any]:
    return _conversation(conversation_id, conn)


@router.patch("/v1/conversations/{conversation_id}")
def rename(conversation_id: str, body: Rename, conn: Store) -> dict[str, Any]:
    rename_conversation(conversation_id, body.title, conn)
    return _conversation(conversation_id, conn)


@router.post("/v1/conversations/{conversation_id}/turns")
def turn(conversation_id: str, body: Turn, conn: Store) -> dict[str, Any]:
    try:
        add_turn(conversation_id, body.user, body.assistant, None, body.citations, body.usage, conn, keep=body.keep)
    except NotFoundError:
        raise
    except GptsError as e:  # all that is left to refuse: more turns to keep than there are
        raise from_gpts_error(e, "keep") from e
    return _conversation(conversation_id, conn)


@router.delete("/v1/conversations/{conversation_id}")
def delete_conversation(conversation_id: str, conn: Store) -> dict[str, Any]:
    remove_conversation(conversation_id, conn)
    return _deleted("conversation", conversation_id)


# -- uploads -----------------------------------------------------------------------------------------------------


def _cited_name(upload: UploadFile) -> str:
    """The name a knowledge file is cited by (and an evaluation set shown by): the base name the client gave it (a
    label here, never a path). One a .gpt bundle could not hold (a Windows drive, a control character) is refused, so
    that the GPT can be exported."""
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name
    if name in ("", ".", "..") or ":" in name or len(name) > 255 or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise bad_request(f"An uploaded file's name ({upload.filename!r}) cannot name a file of a GPT.",
                          "file", "invalid_file_name")
    return name


def _suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ""


def _ensure_store_dir() -> Path:
    folder = store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _upload_folder() -> Iterator[Path]:
    """A folder for one request's uploads, in the store (the same disk the store copies them to)."""
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=_ensure_store_dir()) as folder:
        yield Path(folder)


def _save(upload: UploadFile, path: Path) -> None:
    """Copy an upload (the server has spooled it already, within its upload limit) to a file of ours."""
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, _COPY_CHUNK)
