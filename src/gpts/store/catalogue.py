"""Custom GPTs in the store: create, version, find, rate and remove them.

A GPT is a slug and a list of versions; each version is a spec (gpts.spec) and the files it was built with
(knowledge, an evaluation set), copied into the store and cut into chunks for retrieval. Editing or restoring makes
a new version, so every answer a GPT ever gave can name the exact version that gave it. Slow work (reading files,
cutting chunks) happens before the transaction that writes a version, so a write holds the database for
milliseconds and a failure anywhere leaves the store as it was.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from gpts.errors import ConflictError, GptsError, NotFoundError
from gpts.events import Message, Meter, Report, ignore
from gpts.spec import CATEGORIES, GptSpec, evaluation_kind, parse_spec
from gpts.store import files as blobs
from gpts.store.db import connect, transaction
from gpts.store.fts import index_terms, match_expression

Sort = Literal["recent", "rating", "usage", "score"]
SORTS = get_args(Sort)
CHUNKING_VERSION = 1  # bump when cutting changes, so that files are cut again


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def user_name() -> str:
    """Who rates: $GPTS_USER, else the login name."""
    return os.environ.get("GPTS_USER") or getpass.getuser()


@dataclass(frozen=True)
class StoredFile:
    kind: str  # knowledge | evaluation | adapter
    name: str
    sha256: str
    size: int
    chunks: int  # 0 for files that are not cut

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "size": self.size, "chunks": self.chunks}


@dataclass
class Gpt:
    """One version of a GPT, with what the store knows about the GPT as a whole."""

    id: int
    slug: str
    version: int  # the version this is
    current_version: int
    spec: GptSpec
    files: list[StoredFile]
    created_at: str  # of the GPT
    updated_at: str  # of this version
    builtin: bool = False
    featured: bool = False
    rating: float | None = None
    ratings: int = 0
    conversations: int = 0
    score: dict[str, Any] | None = None  # the latest evaluation of this version: {"metric", "score", ...}

    @property
    def knowledge(self) -> list[StoredFile]:
        return [f for f in self.files if f.kind == "knowledge"]

    def file(self, kind: str) -> StoredFile | None:
        return next((f for f in self.files if f.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "version": self.version, "current_version": self.current_version,
                "spec": self.spec.to_dict(), "files": [f.to_dict() for f in self.files], "created_at": self.created_at,
                "updated_at": self.updated_at, "builtin": self.builtin, "featured": self.featured,
                "rating": self.rating, "ratings": self.ratings, "conversations": self.conversations,
                "score": self.score}


# -- reading -----------------------------------------------------------------------------------------------------


def _gpt_row(conn: sqlite3.Connection, slug: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM gpts WHERE slug = ?", (slug,)).fetchone()
    if row is None:
        close = [r[0] for r in conn.execute("SELECT slug FROM gpts WHERE instr(slug, ?) ORDER BY slug LIMIT 5",
                                            (slug[:4],))]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise NotFoundError(f"No GPT named {slug!r} in the store.{hint}", "See `gpts list`, or `gpts search WORDS`.")
    return row


def _load(conn: sqlite3.Connection, row: sqlite3.Row, version: int | None = None) -> Gpt:
    number = row["version"] if version is None else version
    v = conn.execute("SELECT * FROM versions WHERE gpt_id = ? AND number = ?", (row["id"], number)).fetchone()
    if v is None:
        raise NotFoundError(f"{row['slug']} has no version {number} (versions 1 to {row['version']}).",
                        f"See `gpts versions {row['slug']}`.")
    stored = conn.execute(
        "SELECT vf.kind, vf.name, vf.sha256, f.size, (SELECT count(*) FROM chunks c WHERE c.set_id = vf.set_id) "
        "FROM version_files vf JOIN files f USING (sha256) WHERE vf.gpt_id = ? AND vf.version = ? "
        "ORDER BY vf.kind, vf.name", (row["id"], number)).fetchall()
    stats = conn.execute(
        "SELECT (SELECT avg(stars) FROM ratings WHERE gpt_id = :id), (SELECT count(*) FROM ratings WHERE gpt_id = :id),"
        " (SELECT count(*) FROM conversations WHERE gpt_id = :id)", {"id": row["id"]}).fetchone()
    score = conn.execute("SELECT metric, score, details, created_at FROM evaluations WHERE gpt_id = ? AND version = ? "
                         "ORDER BY rowid DESC LIMIT 1", (row["id"], number)).fetchone()
    return Gpt(id=row["id"], slug=row["slug"], version=number, current_version=row["version"],
               spec=GptSpec.model_validate_json(v["spec"]), files=[StoredFile(*f) for f in stored],
               created_at=row["created_at"], updated_at=v["created_at"], builtin=bool(row["builtin"]),
               featured=bool(row["featured"]), rating=stats[0], ratings=stats[1], conversations=stats[2],
               score=None if score is None else {"metric": score["metric"], "score": score["score"],
                                                 "details": json.loads(score["details"]), "at": score["created_at"]})


def get_gpt(slug: str, version: int | None = None, conn: sqlite3.Connection | None = None) -> Gpt:
    """A GPT at its current version, or at `version`."""
    conn = conn or connect()
    return _load(conn, _gpt_row(conn, slug), version)


def list_gpts(category: str | None = None, sort: Sort = "recent", conn: sqlite3.Connection | None = None) -> list[Gpt]:
    _check_category(category)
    if sort not in SORTS:
        raise GptsError(f"Unknown sort {sort!r}.", f"Sort by one of: {', '.join(SORTS)}.")
    conn = conn or connect()
    gpts = [_load(conn, row) for row in conn.execute("SELECT * FROM gpts ORDER BY id")]
    if category:
        gpts = [g for g in gpts if g.spec.category == category]
    keys: dict[str, Callable[[Gpt], Any]] = {
        "recent": lambda g: g.updated_at,
        "rating": lambda g: (g.rating or 0, g.ratings),
        "usage": lambda g: g.conversations,
        "score": lambda g: (g.score is not None, g.score["score"] if g.score else 0),
    }
    return sorted(gpts, key=keys[sort], reverse=True)


def search_gpts(query: str, category: str | None = None, conn: sqlite3.Connection | None = None) -> list[Gpt]:
    """GPTs whose name, description, instructions or tags match `query`, BM25-ranked, those whose name matches
    first. The last word may be unfinished (search as you type)."""
    _check_category(category)
    conn = conn or connect()
    expression = match_expression(query, prefix=True)
    if expression is None:
        raise GptsError("The search has no words to look for.", "Search for a word, e.g. `gpts search translate`.")
    name_matches = {r[0] for r in conn.execute("SELECT rowid FROM gpts_fts WHERE gpts_fts MATCH ?",
                                               (match_expression(query, "name", prefix=True),))}
    ranked = conn.execute("SELECT rowid, bm25(gpts_fts, 10.0, 4.0, 1.0, 6.0) AS rank FROM gpts_fts "
                          "WHERE gpts_fts MATCH ? ORDER BY rank", (expression,)).fetchall()
    order = sorted(ranked, key=lambda r: (r[0] not in name_matches, r[1]))
    found = [_load(conn, conn.execute("SELECT * FROM gpts WHERE id = ?", (r[0],)).fetchone()) for r in order]
    return [g for g in found if not category or g.spec.category == category]


def _check_category(category: str | None) -> None:
    if category is not None and category not in CATEGORIES:
        raise GptsError(f"Unknown category {category!r}.", f"Categories: {', '.join(CATEGORIES)}.")


@dataclass(frozen=True)
class Version:
    number: int
    created_at: str
    note: str
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.number, "created_at": self.created_at, "note": self.note, "current": self.current}


def gpt_versions(slug: str) -> list[Version]:
    conn = connect()
    row = _gpt_row(conn, slug)
    return [Version(r["number"], r["created_at"], r["note"], r["number"] == row["version"])
            for r in conn.execute("SELECT * FROM versions WHERE gpt_id = ? ORDER BY number", (row["id"],))]


# -- files: what a version is built from ---------------------------------------------------------------------------


@dataclass
class FileSource:
    """A file that goes into a version: a new one on disk (`path`), or one the store holds already (`sha256`)."""

    kind: str
    name: str
    path: Path | None = None
    sha256: str | None = None


@dataclass
class _Prepared:
    source: FileSource
    sha256: str
    size: int
    set_id: int | None = None  # an existing chunk set to reuse
    chunks: list[Any] = field(default_factory=list)  # new chunks (gpts.knowledge.Chunk) to store
    copied: bool = False  # its copy in the store was made for this version


def knowledge_sources(paths: Iterable[str | Path], base_dir: Path, max_bytes: int) -> list[FileSource]:
    """The knowledge files that `paths` (files and folders, relative to `base_dir`) name, each with the name it is
    cited by: a file's own name, or its path from the folder that was given (handbook/leave.md). Each is checked
    (supported, not empty, at most `max_bytes`)."""
    from gpts.knowledge import find_files

    sources: list[FileSource] = []
    for given in paths:
        path = (base_dir / given).expanduser()
        if not path.exists():
            raise GptsError(f"Knowledge file {path} does not exist.", "Check the path (relative paths start at the "
                            "spec file's folder, or the current folder for --knowledge).")
        for found in find_files([path], max_bytes):  # a folder's files are named from the folder ("..": its name)
            name = found.name if path.is_file() else str(found.resolve().relative_to(path.resolve().parent))
            sources.append(FileSource("knowledge", name, found))
    names = [s.name for s in sources]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise GptsError(f"Two knowledge files are both named {duplicate!r}.",
                        "Rename one, or put them in different folders and add the folders.")
    return sources


def _max_bytes(spec: GptSpec) -> int:
    return int(spec.retrieval.max_file_mb * 1024 * 1024)


class _Tokenizer:
    """The model's tokenizer, loaded only when a file has to be cut: a file the store has cut the same way before
    (same content, same tokenizer, same sizes) is not, and loading a tokenizer costs seconds (torch, a GGUF file).
    Which tokenizer a model has is remembered in the store, keyed by the model files' identity."""

    def __init__(self, conn: sqlite3.Connection, model: str):
        from gpts.refs import resolve

        self.conn, self.model = conn, model
        path = resolve(model).path
        files = [path] if path is None or path.is_file() else sorted(path.glob("*.json"))
        identity = "|".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f is not None)
        self.key = "tokenizer:" + hashlib.sha256(f"{model}|{identity}".encode()).hexdigest()[:32]
        self._loaded: Any = None

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from gpts.registry import read_tokenizer

            self._loaded = read_tokenizer(self.model)
        return self._loaded

    def fingerprint(self) -> str:
        known = self.conn.execute("SELECT value FROM settings WHERE key = ?", (self.key,)).fetchone()
        return known[0] if known else hashlib.sha256(self.loaded.backend.to_str().encode()).hexdigest()[:16]

    def remember(self) -> None:
        """Keep the fingerprint, in the transaction of the version that used it (a failed write keeps nothing)."""
        if self._loaded is not None:
            self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                              (self.key, self.fingerprint()))

    def count(self, text: str) -> int:
        return len(self.loaded.encode(text, add_special=False))


def _chunking_key(tokenizer: _Tokenizer, spec: GptSpec) -> str:
    r = spec.retrieval
    return f"{tokenizer.fingerprint()}|{r.chunk_tokens}|{r.overlap_tokens}|v{CHUNKING_VERSION}"


def _prepare(conn: sqlite3.Connection, spec: GptSpec, sources: list[FileSource], report: Report
             ) -> tuple[list[_Prepared], str, _Tokenizer]:
    """Check, copy and cut every new file, before any row is written; returns them and how they were cut. Files
    whose content and cutting the store has already are not read again."""
    from gpts.knowledge import check_file, chunk_segments, extract

    knowledge = [s for s in sources if s.kind == "knowledge"]
    limit = spec.retrieval.max_files
    if len(knowledge) > limit:
        raise GptsError(f"{len(knowledge)} knowledge files; a GPT takes at most {limit}.",
                        "Leave some out, merge small ones, or raise retrieval.max_files in the spec.")
    for s in sources:  # files from a bundle have not been checked yet
        if s.path is not None and s.kind == "knowledge":
            check_file(s.path, _max_bytes(spec))
    tokenizer = _Tokenizer(conn, spec.model)
    chunking = _chunking_key(tokenizer, spec) if knowledge else ""
    meter = Meter(report if sources else ignore, "Reading files", total=len(sources), unit="")
    prepared = []
    for source in sources:
        if source.path is not None:
            sha256 = blobs.sha256_file(source.path)
            size = source.path.stat().st_size
        else:
            sha256 = source.sha256
            size = conn.execute("SELECT size FROM files WHERE sha256 = ?", (sha256,)).fetchone()[0]
        item = _Prepared(source, sha256, size)
        twin = next((p for p in prepared if p.sha256 == sha256 and p.source.kind == "knowledge"), None)
        if source.kind == "knowledge" and twin is not None:  # the same content under two names: cut once
            item.set_id, item.chunks = twin.set_id, twin.chunks
        elif source.kind == "knowledge":
            existing = conn.execute("SELECT id FROM chunk_sets WHERE sha256 = ? AND chunking = ?",
                                    (sha256, chunking)).fetchone()
            if existing is not None:
                item.set_id = existing[0]
            else:
                segments = extract(source.path) if source.path else _extract_stored(sha256, source.name)
                item.chunks = chunk_segments(segments, tokenizer.count, spec.retrieval.chunk_tokens,
                                             spec.retrieval.overlap_tokens)
                report(Message(f"{source.name}: {len(item.chunks)} chunks."))
        prepared.append(item)
        meter.advance()
    meter.done()
    for item in prepared:  # copied only once every file has been read: a refused file leaves no copies behind
        if item.source.path is not None:
            item.copied = blobs.put(item.source.path, item.sha256)
    return prepared, chunking, tokenizer


def _extract_stored(sha256: str, name: str) -> list[Any]:
    """A stored file's text (cut again with other settings). Extraction reads the format from the file's name, and a
    stored copy has only its hash for one."""
    import tempfile

    from gpts.knowledge import extract

    with tempfile.TemporaryDirectory(prefix="gpts-extract-") as folder:
        link = Path(folder) / Path(name).name
        link.symlink_to(blobs.blob_path(sha256))
        return extract(link)


def _write_version(conn: sqlite3.Connection, gpt_id: int, number: int, spec: GptSpec, prepared: list[_Prepared],
                   note: str, chunking: str) -> None:
    stored = spec.model_copy(update={"knowledge": [p.source.name for p in prepared if p.source.kind == "knowledge"],
                                     "evaluation": next((p.source.name for p in prepared
                                                         if p.source.kind == "evaluation"), None)})
    conn.execute("INSERT INTO versions (gpt_id, number, spec, created_at, note) VALUES (?, ?, ?, ?, ?)",
                 (gpt_id, number, stored.model_dump_json(), now(), note))
    made: dict[str, int] = {}  # chunk sets written by this version, by content
    for p in prepared:
        conn.execute("INSERT OR IGNORE INTO files (sha256, size) VALUES (?, ?)", (p.sha256, p.size))
        if not blobs.blob_path(p.sha256).is_file():
            raise _changed_meanwhile()
        set_id = made.get(p.sha256, p.set_id) if p.source.kind == "knowledge" else None
        if set_id is not None and not conn.execute("SELECT 1 FROM chunk_sets WHERE id = ?", (set_id,)).fetchone():
            raise _changed_meanwhile()  # read before this transaction, removed with a GPT since
        if p.source.kind == "knowledge" and set_id is None:
            set_id = made[p.sha256] = conn.execute("INSERT INTO chunk_sets (sha256, chunking) VALUES (?, ?)",
                                                   (p.sha256, chunking)).lastrowid
            for c in p.chunks:
                chunk_id = conn.execute(
                    "INSERT INTO chunks (set_id, idx, text, page_start, page_end, line_start, line_end, tokens) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (set_id, c.index, c.text, *(c.pages or (None, None)), *(c.lines or (None, None)), c.tokens)
                ).lastrowid
                conn.execute("INSERT INTO chunks_fts (rowid, terms) VALUES (?, ?)",
                             (chunk_id, index_terms(f"{p.source.name}\n{c.text}")))
        conn.execute("INSERT INTO version_files (gpt_id, version, kind, name, sha256, set_id) VALUES (?, ?, ?, ?, ?, ?)",
                     (gpt_id, number, p.source.kind, p.source.name, p.sha256, set_id))
    _index_gpt(conn, gpt_id, spec)


def _changed_meanwhile() -> GptsError:
    return GptsError("Another gpts process removed files this GPT uses while it was being saved.",
                     "Run the command again.")


def _commit(conn: sqlite3.Connection, prepared: list[_Prepared], write: Callable[[], None]) -> None:
    """Write a version in one transaction; if it fails, the copies made for it go too (unless another version has
    come to use them meanwhile)."""
    try:
        with transaction(conn):
            write()
    except BaseException:
        _delete_unreferenced(conn, [p.sha256 for p in prepared if p.copied])
        raise


def _delete_unreferenced(conn: sqlite3.Connection, hashes: list[str]) -> None:
    """Delete the copies of these files that no version uses, holding the write lock so that no other process can
    start using one meanwhile."""
    with transaction(conn):
        blobs.delete_copies([h for h in hashes
                             if not conn.execute("SELECT 1 FROM files WHERE sha256 = ?", (h,)).fetchone()])


def _index_gpt(conn: sqlite3.Connection, gpt_id: int, spec: GptSpec) -> None:
    """What `gpts search` finds a GPT by: its current version's words."""
    conn.execute("DELETE FROM gpts_fts WHERE rowid = ?", (gpt_id,))
    conn.execute("INSERT INTO gpts_fts (rowid, name, description, instructions, tags) VALUES (?, ?, ?, ?, ?)",
                 (gpt_id, index_terms(spec.name), index_terms(spec.description), index_terms(spec.instructions),
                  index_terms(" ".join(spec.tags))))


def _check_model(spec: GptSpec) -> None:
    from gpts.refs import resolve

    resolve(spec.model)  # a missing model is an error now, not at the first question


def _sources_for(spec: GptSpec, base_dir: Path | None, extra: list[FileSource]) -> list[FileSource]:
    sources = knowledge_sources(spec.knowledge, base_dir or Path.cwd(), _max_bytes(spec)) if spec.knowledge else []
    if spec.evaluation:
        path = (base_dir or Path.cwd()) / spec.evaluation
        if not path.is_file():
            raise GptsError(f"The evaluation set {path} does not exist.", "Check the path in the spec's evaluation.")
        evaluation_kind(path)  # a set that could never be scored is refused now, naming the file
        sources.append(FileSource("evaluation", path.name, path))
    return [*sources, *extra]


def _build(conn: sqlite3.Connection, spec: GptSpec, sources: list[FileSource], report: Report
           ) -> tuple[list[_Prepared], str, _Tokenizer]:
    _check_model(spec)
    return _prepare(conn, spec, sources, report)


# -- writing -----------------------------------------------------------------------------------------------------


def create_gpt(spec: GptSpec, base_dir: Path | None = None, report: Report = ignore, *, builtin: bool = False,
               files: list[FileSource] | None = None, conn: sqlite3.Connection | None = None) -> Gpt:
    """A new GPT from a spec; its knowledge paths are relative to `base_dir` (the spec file's folder)."""
    conn = conn or connect()
    check_free(conn, spec.slug)
    prepared, chunking, tokenizer = _build(conn, spec, _sources_for(spec, base_dir, files or []), report)

    def write() -> None:
        check_free(conn, spec.slug)  # another process may have taken it meanwhile
        gpt_id = conn.execute("INSERT INTO gpts (slug, version, builtin, created_at) VALUES (?, 1, ?, ?)",
                              (spec.slug, int(builtin), now())).lastrowid
        _write_version(conn, gpt_id, 1, spec, prepared, "created", chunking)
        tokenizer.remember()

    _commit(conn, prepared, write)
    return get_gpt(spec.slug, conn=conn)


def check_free(conn: sqlite3.Connection, slug: str) -> None:
    if conn.execute("SELECT 1 FROM gpts WHERE slug = ?", (slug,)).fetchone():
        raise ConflictError(f"A GPT with the slug {slug!r} exists already.",
                        f"Give the new one another slug (slug: in a spec, --slug with flags, --as on import), or "
                        f"change the existing one with `gpts edit {slug}`.")


def edit_gpt(slug: str, changes: dict[str, Any] | None = None, *, spec: GptSpec | None = None,
             base_dir: Path | None = None, add_knowledge: Iterable[str | Path] = (),
             remove_knowledge: Iterable[str] = (), note: str = "edited", report: Report = ignore,
             files: list[FileSource] | None = None, conn: sqlite3.Connection | None = None) -> Gpt:
    """A new version: a whole new `spec` (its knowledge read from disk again; unchanged files are not cut again), or
    the current one with `changes` (spec fields), knowledge files added (paths) and removed (names)."""
    conn = conn or connect()
    current = get_gpt(slug, conn=conn)
    add_knowledge, remove_knowledge = list(add_knowledge), set(remove_knowledge)
    if spec is not None:
        spec = spec.model_copy(update={"slug": slug})
        sources = _sources_for(spec, base_dir, files or [])
    else:
        data = {**current.spec.to_dict(), **(changes or {}), "slug": slug, "knowledge": [], "evaluation": None}
        spec = parse_spec(data, f" for {slug}")
        if not (add_knowledge or remove_knowledge or files) and spec == current.spec.model_copy(
                update={"knowledge": [], "evaluation": None}):
            raise GptsError(f"Nothing to change in {slug}.", "Pass what to change, e.g. --instructions TEXT.")
        unknown = remove_knowledge - {f.name for f in current.knowledge}
        if unknown:
            raise NotFoundError(f"{slug} has no knowledge file {sorted(unknown)[0]!r}.",
                            f"Its files: {', '.join(f.name for f in current.knowledge) or 'none'}.")
        added = knowledge_sources(add_knowledge, Path.cwd(), _max_bytes(spec))
        replaced = remove_knowledge | {s.name for s in added}  # a file added under a name it has is replaced
        kept = [FileSource(f.kind, f.name, sha256=f.sha256) for f in current.files
                if not (f.kind == "knowledge" and f.name in replaced)]
        sources = [*kept, *added, *(files or [])]
    prepared, chunking, tokenizer = _build(conn, spec, sources, report)

    def write() -> None:
        row = _gpt_row(conn, slug)
        if row["version"] != current.current_version:  # another edit landed since this one read the GPT
            raise ConflictError(f"{slug} changed while this edit was being made (it is now at version {row['version']}).",
                            "Run the edit again: it will start from the new version.")
        number = conn.execute("SELECT max(number) FROM versions WHERE gpt_id = ?", (row["id"],)).fetchone()[0] + 1
        _write_version(conn, row["id"], number, spec, prepared, note, chunking)
        tokenizer.remember()
        conn.execute("UPDATE gpts SET version = ? WHERE id = ?", (number, row["id"]))

    _commit(conn, prepared, write)
    return get_gpt(slug, conn=conn)


def restore_gpt(slug: str, number: int, conn: sqlite3.Connection | None = None) -> Gpt:
    """A new version equal to version `number`."""
    conn = conn or connect()
    with transaction(conn):
        row = _gpt_row(conn, slug)
        old = _load(conn, row, number)
        new = conn.execute("SELECT max(number) FROM versions WHERE gpt_id = ?", (row["id"],)).fetchone()[0] + 1
        conn.execute("INSERT INTO versions (gpt_id, number, spec, created_at, note) SELECT gpt_id, ?, spec, ?, ? "
                     "FROM versions WHERE gpt_id = ? AND number = ?",
                     (new, now(), f"restored version {number}", row["id"], number))
        conn.execute("INSERT INTO version_files (gpt_id, version, kind, name, sha256, set_id) SELECT gpt_id, ?, kind, "
                     "name, sha256, set_id FROM version_files WHERE gpt_id = ? AND version = ?",
                     (new, row["id"], number))
        conn.execute("UPDATE gpts SET version = ? WHERE id = ?", (new, row["id"]))
        _index_gpt(conn, row["id"], old.spec)
    return get_gpt(slug, conn=conn)


def remove_gpt(slug: str, conn: sqlite3.Connection | None = None) -> None:
    """The GPT and all its versions; its conversations stay (under its slug). Files no other GPT uses go too."""
    conn = conn or connect()
    with transaction(conn):
        row = _gpt_row(conn, slug)
        conn.execute("DELETE FROM gpts_fts WHERE rowid = ?", (row["id"],))
        conn.execute("DELETE FROM gpts WHERE id = ?", (row["id"],))
        unused = blobs.remove_unused(conn)
    _delete_unreferenced(conn, unused)


@dataclass(frozen=True)
class Rating:
    slug: str
    user: str
    stars: int
    review: str
    average: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rate_gpt(slug: str, stars: int, review: str = "", user: str | None = None,
             conn: sqlite3.Connection | None = None) -> Rating:
    """One rating per user: rating again replaces it."""
    if not isinstance(stars, int) or isinstance(stars, bool) or not 1 <= stars <= 5:
        raise GptsError(f"{stars!r} stars is not a rating.", "Rate from 1 to 5 stars.")
    conn = conn or connect()
    user = user or user_name()
    with transaction(conn):
        row = _gpt_row(conn, slug)
        conn.execute("INSERT INTO ratings (gpt_id, user, stars, review, created_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (gpt_id, user) DO UPDATE SET stars = excluded.stars, review = excluded.review, "
                     "created_at = excluded.created_at", (row["id"], user, stars, review, now()))
        average, count = conn.execute("SELECT avg(stars), count(*) FROM ratings WHERE gpt_id = ?",
                                      (row["id"],)).fetchone()
    return Rating(slug, user, stars, review, average, count)


def record_evaluation(slug: str, version: int, metric: str, score: float, details: dict[str, Any],
                      conn: sqlite3.Connection | None = None) -> None:
    conn = conn or connect()
    with transaction(conn):
        row = _gpt_row(conn, slug)
        conn.execute("INSERT INTO evaluations (gpt_id, version, metric, score, details, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (row["id"], version, metric, score, json.dumps(details), now()))


def set_featured(slug: str, featured: bool = True, conn: sqlite3.Connection | None = None) -> None:
    conn = conn or connect()
    with transaction(conn):
        conn.execute("UPDATE gpts SET featured = ? WHERE id = ?", (int(featured), _gpt_row(conn, slug)["id"]))


def featured_gpts(conn: sqlite3.Connection | None = None) -> list[Gpt]:
    """The GPTs marked featured (the ready ones that ship with gpts, and any a user marks), best rated first."""
    conn = conn or connect()
    gpts = [_load(conn, row) for row in conn.execute("SELECT * FROM gpts WHERE featured = 1 ORDER BY id")]
    return sorted(gpts, key=lambda g: (g.rating or 0), reverse=True)


def trending_gpts(days: int = 7, conn: sqlite3.Connection | None = None) -> list[tuple[Gpt, int]]:
    """GPTs with activity over the last `days` days (conversations started, ratings given), most first."""
    conn = conn or connect()
    since = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    rows = conn.execute(
        "SELECT g.*, (SELECT count(*) FROM conversations c WHERE c.gpt_id = g.id AND c.created_at >= :since) + "
        "(SELECT count(*) FROM ratings r WHERE r.gpt_id = g.id AND r.created_at >= :since) AS activity "
        "FROM gpts g WHERE activity > 0 ORDER BY activity DESC, g.id", {"since": since}).fetchall()
    return [(_load(conn, row), row["activity"]) for row in rows]


def file_bytes(gpt: Gpt, kind: str, name: str | None = None) -> Path:
    """The stored copy of one of a GPT's files."""
    stored = next((f for f in gpt.files if f.kind == kind and (name is None or f.name == name)), None)
    if stored is None:
        raise NotFoundError(f"{gpt.slug} version {gpt.version} has no {kind} file{f' {name!r}' if name else ''}.",
                        f"See `gpts show {gpt.slug}`.")
    return blobs.blob_path(stored.sha256)
