"""Corpus -> token shards: what `gpts prepare` writes and `gpts pretrain` reads.

Sources, any mix, read in the order given:

    FILE                    a text file: one document
    FILE.jsonl              one document a line, its text in the `text_field` field (also .ndjson)
    DIR                     its files, recursively, in sorted order; hidden entries, binary files (a NUL byte in
                            the first 8 KiB), UTF-16/32 files (named in the summary, with how to convert them)
                            and prepared-data directories are skipped. --include / --exclude
                            globs match a file's path relative to DIR, its name, or one of its parent folders
                            (so `--exclude tests` drops every tests/ tree); without --include, every text file.
    hf:DATASET[:SPLIT]      a `datasets` dataset, streamed (hf:DATASET:CONFIG:SPLIT names a configuration;
                            DATASET may also be a local folder of data files); SPLIT defaults to train
    builtin:python-stdlib   the .py files of the running interpreter's standard library, without its test
                            suites, idlelib and site-packages: the default corpus, no download needed

Tokenizers: `bpe:VOCAB_SIZE` trains a byte-level BPE on the corpus; `char` is the corpus's sorted characters
(nanoGPT's shakespeare_char); anything else is a model reference (or a folder with tokenizer.json, such as a
prepared-data directory) whose tokenizer is used. Documents: with BPE and model tokenizers each document ends with
the eos token (and starts with bos where the tokenizer adds one); a char vocabulary has no special token, so its
documents are joined with a blank line ("\\n\\n"). One file with `char` gives exactly nanoGPT's tokens.

The output directory (self-contained; `PreparedData.open` reads it):

    train.bin, val.bin      flat arrays of token ids, uint16 when every id fits, else uint32, as nanoGPT's
                            prepare.py writes them: one file per split, memory-mapped by readers
    manifest.json           sources (path, bytes, sha256), document and token counts, tokenizer, dtype, split
    tokenizer.json, tokenizer_config.json

The split: the last `val_fraction` of the tokens is validation (split = int(tokens * (1 - val_fraction))), so a
fixed corpus gives a fixed split; for one file with `char` it is nanoGPT's 90/10 split of the characters.

Streaming: texts are cut into pieces of at most PIECE_BYTES, after a newline that a non-space character follows
(where byte-level BPE pre-tokenizers split anyway, so the tokens are those of the whole text; a SentencePiece
tokenizer that prepends a space gives each piece its own); pieces are tokenized BATCH_BYTES at a time with
encode_batch and appended to train.bin, whose tail then moves to val.bin. Memory holds one batch, whatever the
corpus size (BPE training holds the counts of distinct words, which grow far slower than the corpus). `bpe` and
`char` read the corpus twice: once to learn the vocabulary, once to tokenize. Invalid UTF-8 is replaced by
U+FFFD, and the manifest and summary say where.
The directory is built beside `out` and moved into place at the end: an error leaves nothing behind. Replacing
prepared data (`overwrite`) replaces its own files (DATA_FILES) and nothing else: other datasets prepared inside
it, or any other file there, stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.metadata import PackageNotFoundError, version
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from gpts import paths
from gpts.errors import GptsError
from gpts.events import Message, Meter, Report, ignore
from gpts.fileio import check_writable, not_utf8_error, open_binary, read_jsonl, sniff_encoding, temp_dir_beside
from gpts.tokenizer import Tokenizer, check_bpe_vocab_size, has_tokenizer_files

FORMAT = "gpts-prepared-data"
FORMAT_VERSION = 1
STDLIB = "builtin:python-stdlib"
# Longest text tokenized as one sequence: tokenizers encodes short texts faster (about 2x at 16 KiB than at
# 1 MiB), and the cuts are where tokens end anyway (see _cut).
PIECE_BYTES = 16 << 10
BATCH_BYTES = 1 << 20  # text tokenized (in parallel threads) and written at a time
CHAR_DOCUMENT_JOIN = "\n\n"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Parts of the standard library that are not what a person means by "the Python sources".
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})
# What a prepared directory is made of; `overwrite` replaces these and only these, the manifest last.
DATA_FILES = ("train.bin", "val.bin", "tokenizer.json", "tokenizer_config.json", "manifest.json")


# -- sources ----------------------------------------------------------------------------------------------


@dataclass
class Input:
    """One file or dataset of the corpus, and what reading it found (filled in as it is read)."""
    source: str  # a path, or hf:...
    kind: str  # "text" | "jsonl" | "hf"
    size: int | None = None  # bytes on disk, known before reading (None for a dataset)
    bytes: int = 0
    sha256: str | None = None
    documents: int = 0
    invalid_utf8_at: int | None = None  # byte offset of the first invalid UTF-8 sequence

    def record(self) -> dict[str, Any]:
        row = {"source": self.source, "kind": self.kind, "documents": self.documents}
        if self.kind != "hf":
            row.update(bytes=self.bytes, sha256=self.sha256)
        if self.invalid_utf8_at is not None:
            row["invalid_utf8_at"] = self.invalid_utf8_at
        return row


@dataclass
class Piece:
    text: str
    starts_document: bool


def _matches(rel: str, globs: Iterable[str]) -> bool:
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] + parts
    return any(fnmatchcase(c, g) for g in globs for c in candidates)


def _not_text(path: Path) -> str | None:
    """Why a file is no corpus text: "binary" (a NUL byte in its first 8 KiB), or its encoding when it is UTF-16
    or UTF-32 (whose NUL bytes would otherwise pass for binary); None for text."""
    with open_binary(path) as f:
        head = f.read(8192)
    return sniff_encoding(head) or ("binary" if b"\0" in head else None)


@dataclass
class Skipped:
    """The files of folders that are not corpus text."""
    binary: int = 0
    wide: list[tuple[str, str]] = field(default_factory=list)  # (path, encoding) of UTF-16/32 files

    def describe(self) -> str:
        parts = [_count(self.binary, "binary file")] if self.binary else []
        if self.wide:
            path, encoding = self.wide[0]
            parts.append(f"{_count(len(self.wide), 'UTF-16/32 file')} (the first, {path}, is {encoding}; convert "
                         f"with: iconv -f {encoding} -t UTF-8 FILE > FILE.utf8)")
        return ", ".join(parts)


def _file_input(path: Path) -> Input:
    kind = "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text"
    return Input(str(path.absolute()), kind, size=path.stat().st_size)


def _walk(root: Path, include: list[str], exclude: list[str], skipped: Skipped,
          skip_dirs: frozenset[str] = frozenset(), suffix: str = "") -> list[Path]:
    """The text files under `root` (named *suffix) that the globs select, sorted by relative path; the others go
    into `skipped`."""
    def fail(e: OSError) -> None:
        raise GptsError(f"Cannot read the folder {e.filename}: {e.strerror or e}.",
                        "Make it readable, or --exclude it.") from e

    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root, onerror=fail):
        here = Path(folder)
        # Hidden folders (.git, .venv, our own temporary build folders) and prepared data are never corpus.
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skip_dirs
                   and not is_prepared(here / d)]
        for name in files:
            if name.startswith(".") or not name.endswith(suffix):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            if (include and not _matches(rel, include)) or _matches(rel, exclude):
                continue
            found.append((rel, path))
    found.sort()
    texts = []
    for _, path in found:
        if path.is_symlink() and not path.exists():
            raise GptsError(f"{path} is a broken symbolic link.", "Fix or remove it, or --exclude it.")
        why = _not_text(path)
        if why == "binary":
            skipped.binary += 1
        elif why is not None:
            skipped.wide.append((str(path), why))
        else:
            texts.append(path)
    return texts


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _resolve(sources: list[str], include: list[str], exclude: list[str]) -> tuple[list[Input], Skipped]:
    """Every source as a list of inputs (directories expanded); and the files of folders that were skipped."""
    inputs: list[Input] = []
    skipped = Skipped()
    for spec in sources:
        if spec.startswith("hf:"):
            _parse_hf(spec)  # fail on a malformed one before reading anything
            inputs.append(Input(spec, "hf"))
            continue
        if spec.startswith("builtin:"):
            if spec != STDLIB:
                raise GptsError(f"Unknown built-in corpus {spec!r}.", f"The built-in corpus is {STDLIB}.")
            path, skip_dirs, suffix = stdlib_root(), STDLIB_SKIP, ".py"
        else:
            path, skip_dirs, suffix = Path(spec).expanduser(), frozenset(), ""
            if path.is_symlink() and not path.exists():
                raise GptsError(f"{path} is a broken symbolic link.", "Point to the file it should name.")
            if not path.exists():
                raise GptsError(f"No such file or folder: {path}.", "Check the path.")
        if path.is_dir():
            here = Skipped()
            files = _walk(path, include, exclude, here, skip_dirs, suffix)
            if not files:
                globs = f" matching --include {' '.join(include)}" if include else ""
                raise GptsError(f"The folder {path} holds no text files{globs}"
                                f"{f' ({here.describe()} skipped)' if here.describe() else ''}.",
                                "Point to a folder of UTF-8 text files, or change --include / --exclude.")
            skipped.binary += here.binary
            skipped.wide += here.wide
            inputs += [_file_input(p) for p in files]
        elif (why := _not_text(path)) == "binary":
            raise GptsError(f"{path} is not a text file (it holds NUL bytes).",
                            "Pass text files (UTF-8), .jsonl files or folders of them.")
        elif why is not None:
            raise not_utf8_error(path, why)
        else:
            inputs.append(_file_input(path))
    return inputs, skipped


def _decode(data: bytes, inp: Input, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if inp.invalid_utf8_at is None:
            inp.invalid_utf8_at = offset + e.start
        return data.decode("utf-8", errors="replace")


def _cut(data: str | bytes, limit: int) -> int:
    """Where the first piece of `data` (longer than `limit`) ends, at most `limit` in: after a newline followed by a
    non-space character, where the pre-tokenizers of byte-level BPEs (GPT-2, Llama-3, Qwen2, ...) split anyway, so
    that tokenizing the pieces gives the tokens of the whole text; else after any newline; else (one very long
    line) at a character boundary. A newline byte is never part of a multi-byte UTF-8 character."""
    newline = "\n" if isinstance(data, str) else b"\n"
    end = last = data.rfind(newline, 0, limit)
    while end >= 0 and data[end + 1:end + 2].isspace():
        end = data.rfind(newline, 0, end)
    if end >= 0 or last >= 0:
        return (end if end >= 0 else last) + 1
    if isinstance(data, bytes):
        for i in range(limit, max(limit - 4, 0), -1):
            if data[i] & 0xC0 != 0x80:  # not a continuation byte (10xxxxxx): a character starts here
                return i
    return limit


def _read_text(inp: Input) -> Iterator[str]:
    """A text file in pieces of at most PIECE_BYTES; hashes the bytes on the way."""
    sha, pending, start = hashlib.sha256(), b"", 0
    with open_binary(Path(inp.source)) as f:
        while block := f.read(PIECE_BYTES):
            sha.update(block)
            pending += block
            while len(pending) > PIECE_BYTES:
                cut = _cut(pending, PIECE_BYTES)
                yield _decode(pending[:cut], inp, start)
                start += cut
                pending = pending[cut:]
    yield _decode(pending, inp, start)
    inp.bytes, inp.sha256 = start + len(pending), sha.hexdigest()


def _split_text(text: str) -> Iterator[str]:
    """A long document in pieces of at most PIECE_BYTES characters (at most 4x that in UTF-8, which is fine)."""
    while len(text) > PIECE_BYTES:
        cut = _cut(text, PIECE_BYTES)
        yield text[:cut]
        text = text[cut:]
    yield text


def _text_field(row: Any, text_field: str, where: str) -> str:
    if not isinstance(row, dict) or text_field not in row:
        has = f" (it has: {', '.join(map(str, row))})" if isinstance(row, dict) else " (it is not an object)"
        raise GptsError(f"{where}: no {text_field!r} field{has}.",
                        "Pass --text-field NAME for the field that holds the text.")
    text = row[text_field]
    if not isinstance(text, str):
        raise GptsError(f"{where}: the {text_field!r} field is not text but {type(text).__name__}.",
                        "Pass --text-field NAME for the field that holds the text.")
    return text


def _read_jsonl(inp: Input, text_field: str) -> Iterator[str]:
    sha, size = hashlib.sha256(), 0

    def seen(raw: bytes) -> None:
        nonlocal size
        sha.update(raw)
        size += len(raw)

    for line in read_jsonl(inp.source, on_line=seen, replace_invalid_utf8=True):
        where = f"{inp.source}, line {line.number}"
        if line.error is not None:
            raise GptsError(f"{where}: not valid JSON ({line.error}).",
                            'Each line of a .jsonl file must be one JSON object, like {"text": "..."}.')
        if line.invalid_utf8_at is not None and inp.invalid_utf8_at is None:
            inp.invalid_utf8_at = line.invalid_utf8_at
        yield _text_field(line.value, text_field, where)
    inp.bytes, inp.sha256 = size, sha.hexdigest()


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise GptsError("hf: sources need the `datasets` library, which is not installed.",
                        "Install it with: pip install datasets") from e
    return datasets


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise GptsError(f"Malformed dataset source {spec!r}.",
                        "Write hf:DATASET, hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT, "
                        "e.g. hf:roneneldan/TinyStories.")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return parts[0], None, parts[1] if len(parts) == 2 else "train"


def _read_hf(inp: Input, text_field: str) -> Iterator[str]:
    """A dataset's rows, streamed by `datasets` (from the hub, its cache, or a local folder of data files)."""
    from gpts.weights.hf import is_network_error, hub_offline

    name, config, split = _parse_hf(inp.source)
    datasets = _import_datasets()
    offline = GptsError(f"Cannot download the dataset {inp.source}: gpts is offline (no network, or HF_HUB_OFFLINE "
                        "is set).", "Connect to the internet, or prepare local files instead.")
    local = Path(name).expanduser().exists()
    if not local and hub_offline():
        raise offline
    if not local:  # one quick request: offline, `datasets` would retry for half a minute before failing
        import huggingface_hub

        try:
            huggingface_hub.HfApi().dataset_info(name, timeout=10)
        except Exception as e:  # anything but the network (a misspelled or private name) is for datasets to say
            if is_network_error(e):
                raise offline from e
    try:
        rows = datasets.load_dataset(str(Path(name).expanduser()) if local else name, config, split=split,
                                     streaming=True, cache_dir=str(paths.cache_dir() / "datasets"))
        for i, row in enumerate(rows):
            yield _text_field(row, text_field, f"{inp.source}, row {i}")
    except GptsError:
        raise
    except Exception as e:  # datasets raises many kinds; the user-caused ones become clear errors
        if is_network_error(e):
            raise offline from e
        if isinstance(e, (FileNotFoundError, ValueError)) or type(e).__name__ == "DatasetNotFoundError":
            raise GptsError(f"Cannot load the dataset {inp.source}: {e}",
                            "Check the dataset name, configuration and split (hf:DATASET:CONFIG:SPLIT).") from e
        raise


def _as_document(texts: Iterable[str]) -> Iterator[Piece]:
    first = True
    for text in texts:
        if text:  # empty files and empty rows are no documents
            yield Piece(text, first)
            first = False


def _pieces(inputs: list[Input], text_field: str) -> Iterator[Piece]:
    for inp in inputs:
        inp.documents, inp.invalid_utf8_at = 0, None
        if inp.kind == "text":
            docs: Iterable[Iterable[str]] = [_read_text(inp)]
        else:
            rows = _read_jsonl(inp, text_field) if inp.kind == "jsonl" else _read_hf(inp, text_field)
            docs = (_split_text(text) for text in rows)
        for doc in docs:
            for piece in _as_document(doc):
                inp.documents += piece.starts_document
                yield piece


# -- tokenizers -------------------------------------------------------------------------------------------


def _tokenizer_kind(spec: str) -> tuple[str, int | None]:
    """("char" | "bpe" | "model", the BPE vocabulary size); checked before any reading."""
    spec = spec.strip()
    if spec == "char":
        return "char", None
    if spec == "bpe" or spec.startswith("bpe:"):
        size = spec[len("bpe:"):]
        if not size.isdigit():
            raise GptsError(f"Bad tokenizer {spec!r}: bpe needs a vocabulary size.",
                            "Write bpe:VOCAB_SIZE, e.g. bpe:8192.")
        check_bpe_vocab_size(int(size))
        return "bpe", int(size)
    return "model", None


def load_tokenizer(ref: str) -> Tokenizer:
    """The tokenizer of a model reference, or of a folder with tokenizer files (e.g. prepared data), loading no
    weights: a GGUF file's metadata only, a directory's tokenizer files only."""
    from gpts.refs import ALIASES, BUNDLED, resolve

    path = Path(ref).expanduser()
    if path.is_dir() and has_tokenizer_files(path):
        return Tokenizer.from_dir(path)
    name = ref.strip().lower()
    if not (path.exists() or name.startswith("hf:") or ALIASES.get(name, name) in BUNDLED):
        raise GptsError(f"Unknown tokenizer {ref!r}: it is not bpe:VOCAB_SIZE, char, a model name or a path.",
                        f"Pass bpe:8192, char, a model ({', '.join([*ALIASES, *BUNDLED])}), a model or tokenizer "
                        "folder, a GGUF file, or hf:ORG/NAME.")
    mref = resolve(ref)
    if mref.kind in ("bundled", "gguf"):
        from gpts.weights.gguf import read_gguf_metadata

        meta = read_gguf_metadata(mref.path)
        if "tokenizer.ggml.tokens" not in meta:
            raise GptsError(f"{mref.path} holds no tokenizer.", "Pass a model that has one, or bpe:VOCAB_SIZE.")
        return Tokenizer.from_gguf_metadata(meta)
    if mref.kind == "hub":
        from gpts.weights.hf import download_hf, parse_hf_ref

        path = download_hf(*parse_hf_ref(mref.ref))
    else:
        path = mref.path
    return Tokenizer.from_dir(path)


def _chars(texts: Iterable[str]) -> set[str]:
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    return chars


def _vocab_size(tokenizer: Tokenizer) -> int:
    """One more than the largest id (a vocabulary may have holes)."""
    return max(tokenizer.backend.get_vocab(with_added_tokens=True).values()) + 1


# -- writing ----------------------------------------------------------------------------------------------


def _tracked(pieces: Iterable[Piece], meter: Meter) -> Iterator[Piece]:
    for piece in pieces:
        yield piece
        meter.advance(len(piece.text.encode("utf-8")))
    meter.done()


def _char_joined(pieces: Iterable[Piece]) -> Iterator[Piece]:
    first = True
    for piece in pieces:
        if piece.starts_document and not first:
            piece = Piece(CHAR_DOCUMENT_JOIN + piece.text, True)
        first = False
        yield piece


def _write_tokens(pieces: Iterable[Piece], tokenizer: Tokenizer, separator: int | None, dtype: type,
                  path: Path) -> int:
    """Tokenize `pieces` BATCH_BYTES at a time into a flat array file; the number of tokens written.
    `separator` ends each document (None: nothing between documents)."""
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    # encode_batch_fast (tokenizers >= 0.20) skips the offsets we do not need: about 30% faster.
    encode = getattr(tokenizer.backend, "encode_batch_fast", tokenizer.backend.encode_batch)
    started = False
    written = 0
    batch: list[Piece] = []

    def flush(final: bool = False) -> None:
        nonlocal started, written
        encoded = encode([p.text for p in batch], add_special_tokens=False)
        parts: list[list[int]] = []
        for piece, enc in zip(batch, encoded):
            if piece.starts_document:
                parts.append(([separator] if started and separator is not None else [])
                             + ([bos] if bos is not None else []))
                started = True
            parts.append(enc.ids)
        if final and started and separator is not None:
            parts.append([separator])
        ids = np.fromiter(chain.from_iterable(parts), dtype=dtype)
        ids.tofile(f)
        written += len(ids)
        batch.clear()

    with open(path, "wb") as f:
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece.text)
            if size >= BATCH_BYTES:
                flush()
                size = 0
        flush(final=True)
    return written


def _split_off_val(train: Path, val: Path, split: int, itemsize: int) -> None:
    """Move the tokens from `split` on to `val`, in blocks, and cut them off `train`."""
    with open(train, "r+b") as src, open(val, "wb") as dst:
        src.seek(split * itemsize)
        shutil.copyfileobj(src, dst, BATCH_BYTES)
        src.truncate(split * itemsize)


# -- the prepared directory -------------------------------------------------------------------------------


def _manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a directory that `prepare` wrote; None for anything else (a corpus)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def is_prepared(path: str | Path) -> bool:
    """Whether `path` is a directory that `prepare` wrote (as opposed to a corpus)."""
    return _manifest(Path(path)) is not None


@dataclass
class PreparedData:
    path: Path
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    train: np.memmap = field(repr=False)
    val: np.memmap = field(repr=False)

    @property
    def vocab_size(self) -> int:
        return self.manifest["tokenizer"]["vocab_size"]

    @classmethod
    def open(cls, path: str | Path) -> PreparedData:
        path = Path(path)
        manifest = _manifest(path)
        if manifest is None:
            raise GptsError(f"{path} is not prepared data (it has no gpts manifest.json).",
                            f"Prepare a corpus with: gpts prepare SOURCES --out {path}")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise GptsError(f"{path} was prepared by a newer gpts (format {manifest['format_version']}).",
                            "Upgrade gpts, or prepare the corpus again.")
        dtype = np.dtype(manifest["dtype"])
        splits = {}
        for name in ("train", "val"):
            file, count = path / f"{name}.bin", manifest["tokens"][name]
            if not file.is_file() or file.stat().st_size != count * dtype.itemsize:
                raise GptsError(f"{file} is missing or not {count:,} {dtype.name} tokens long: the data is damaged.",
                                "Prepare the corpus again (gpts prepare ... --force).")
            splits[name] = np.memmap(file, dtype=dtype, mode="r", shape=(count,))
        return cls(path, manifest, Tokenizer.from_dir(path), splits["train"], splits["val"])


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _gpts_version() -> str:
    try:
        return version("gpts")
    except PackageNotFoundError:
        return "unknown"


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise GptsError(f"{out} exists and is not a directory.", "Choose another --out.")
    if not any(out.iterdir()):
        return
    if not is_prepared(out):
        raise GptsError(f"{out} exists and does not hold prepared data: gpts never replaces it.",
                        "Choose another --out.")
    if not overwrite:
        raise GptsError(f"{out} already holds prepared data.", "Pass --force to replace it, or choose another --out.")


def _install(staged: Path, out: Path) -> None:
    """Put the prepared files of `staged` at `out`: a new directory moves in whole; prepared data already there has
    its own files replaced one by one, the manifest last, and whatever else it holds (other datasets prepared
    inside it, say) stays."""
    if not out.is_dir() or not any(out.iterdir()):
        os.replace(staged, out)
        return
    for name in DATA_FILES:
        os.replace(staged / name, out / name)


def prepare(sources: Iterable[str], out: str | Path, tokenizer: str = "bpe:8192", val_fraction: float = 0.1,
            include: Iterable[str] = (), exclude: Iterable[str] = (), text_field: str = "text",
            overwrite: bool = False, report: Report = ignore) -> PreparedData:
    """Tokenize `sources` (the standard library's sources when empty) into `out`; see the module docstring.
    Progress goes to `report`: the bytes read while learning the vocabulary, then while tokenizing."""
    out = Path(out).expanduser()
    include, exclude = list(include), list(exclude)
    if not 0 < val_fraction < 1:
        raise GptsError(f"val_fraction {val_fraction} is not between 0 and 1.", "Use e.g. --val-fraction 0.1.")
    kind, bpe_size = _tokenizer_kind(tokenizer)
    _check_out(out, overwrite)
    check_writable(out)
    tok = load_tokenizer(tokenizer) if kind == "model" else None
    sources = [str(s) for s in sources] or [STDLIB]
    inputs, skipped = _resolve(sources, include, exclude)
    if skipped.describe():
        report(Message(f"Skipped {skipped.describe()}.", level="warning"))
    total = None if any(i.kind == "hf" for i in inputs) else sum(i.size for i in inputs)

    def corpus(task: str) -> Iterator[Piece]:
        pieces = _tracked(_pieces(inputs, text_field), Meter(report, task, total, "bytes"))
        return _char_joined(pieces) if kind == "char" else pieces

    empty = GptsError(f"The corpus is empty: {', '.join(sources)} hold{'s' * (len(sources) == 1)} no text.",
                      "Point to files with text in them.")
    if tok is None:
        texts = (p.text for p in corpus("Learning the vocabulary"))
        first = next(texts, None)
        if first is None:
            raise empty
        texts = chain([first], texts)
        tok = Tokenizer.train_bpe(texts, bpe_size) if kind == "bpe" else Tokenizer.char_level(_chars(texts))
    vocab_size = _vocab_size(tok)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    separator = None if kind == "char" else tok.eos_id if tok.eos_id is not None else tok.bos_id
    with temp_dir_beside(out) as staging:
        tmp = staging / out.name
        tmp.mkdir()
        n = _write_tokens(corpus("Tokenizing"), tok, separator, dtype, tmp / "train.bin")
        documents = sum(i.documents for i in inputs)
        if not documents:
            raise empty
        split = int(n * (1 - val_fraction))
        if not 0 < split < n:
            raise GptsError(f"The corpus is too small to split: {n} tokens, of which {val_fraction:g} is "
                            f"{n - split} for validation and {split} for training.",
                            "Add text, or change --val-fraction.")
        _split_off_val(tmp / "train.bin", tmp / "val.bin", split, np.dtype(dtype).itemsize)
        tok.save(tmp)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "gpts_version": _gpts_version(),
            "sources": sources, "include": include, "exclude": exclude, "text_field": text_field,
            "inputs": [i.record() for i in inputs], "binary_files_skipped": skipped.binary,
            "wide_files_skipped": [{"path": path, "encoding": encoding} for path, encoding in skipped.wide],
            "documents": documents, "bytes": sum(i.bytes for i in inputs),
            "tokenizer": {"spec": tokenizer, "kind": kind, "vocab_size": vocab_size,
                          "document_separator": CHAR_DOCUMENT_JOIN if kind == "char" else
                          tok.backend.id_to_token(separator) if separator is not None else None},
            "dtype": np.dtype(dtype).name, "val_fraction": val_fraction, "split": split,
            "tokens": {"total": n, "train": split, "val": n - split},
            "files": {"train": "train.bin", "val": "val.bin"},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _install(tmp, out)
    return PreparedData.open(out)
