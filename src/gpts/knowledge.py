"""The knowledge files of a GPT: files turned into text with locations, and text cut into token-sized chunks.

`find_files` picks the files a GPT's `knowledge:` names (folders walked), `check_file` rejects what cannot be
used before any long work starts, `extract` turns one file into `Segment`s (paragraphs, rows, records) that
remember their page or line, and `chunk_segments` packs those into overlapping `Chunk`s the way OpenAI's file
search does (800 tokens overlapping by 400 by default), but cut at paragraph and sentence boundaries where it
can, so that an answer can cite the pages or lines its chunk came from.

pypdf and BeautifulSoup load only when a PDF or an HTML file is read, so that importing this module is cheap.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpts.errors import GptsError
from gpts.fileio import open_binary, read_jsonl, read_text

MAX_FILE_BYTES = 512 * 1024 * 1024  # OpenAI's per-file cap

# Read as plain text: paragraphs with their line numbers.
_TEXT_SUFFIXES = frozenset({
    ".txt", ".text", ".md", ".markdown", ".rst", ".adoc", ".org", ".tex", ".log",
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".c", ".h", ".cpp",
    ".cc", ".cxx", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".lua", ".pl", ".r", ".jl", ".dart",
    ".sh", ".bash", ".zsh", ".ps1", ".bat", ".sql", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".xml", ".css",
    ".scss", ".vue", ".svelte",
})
_HTML_SUFFIXES = frozenset({".html", ".htm"})
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUPPORTED_SUFFIXES: frozenset[str] = (
    _TEXT_SUFFIXES | _HTML_SUFFIXES | frozenset(_CSV_DELIMITERS) | {".pdf", ".json", ".jsonl"})

_MIN_CHUNK_TOKENS = 16


@dataclass(frozen=True)
class Segment:
    """A piece of extracted text and where it is in its file."""

    text: str
    page: int | None  # 1-based PDF page; None for other formats
    line: int | None  # 1-based line of the segment's first line in the file; None for PDF and (pretty-printed) JSON


@dataclass(frozen=True)
class Chunk:
    """A piece of a file's text as search finds and cites it."""

    index: int  # 0-based within its file
    text: str
    pages: tuple[int, int] | None  # first and last PDF page the chunk covers
    lines: tuple[int, int] | None  # first and last source line the chunk covers
    tokens: int


# -- which files ----------------------------------------------------------------------------------------------


def check_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
    """Raise a GptsError naming `path` when it cannot be a knowledge file: missing, unreadable, a folder, of a
    format gpts does not read, empty, or larger than `max_bytes`."""
    with open_binary(path) as f:  # its errors name the file and say what is wrong (missing, folder, permission)
        size = os.fstat(f.fileno()).st_size
    _check_suffix(path)
    if size == 0:
        raise GptsError(f"{path} is empty.", "Put text in it, or leave it out.")
    if size > max_bytes:
        raise GptsError(f"{path} is {_size(size)}, over the limit of {_size(max_bytes)} for a knowledge file.",
                        "Split it into smaller files, or raise the limit in the GPT spec: "
                        "`retrieval: {max_file_mb: N}`.")


def find_files(paths: Iterable[Path], max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """The knowledge files among `paths`, in order, each once: a file stands for itself and must pass
    `check_file`; a folder stands for the supported files under it, walked in sorted order. Inside folders, hidden
    files and folders, files of other formats and empty files are skipped: a folder of code has empty
    `__init__.py` files and a `.git`, and neither should stop the rest."""
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            candidates = [p for p in _walk(path) if p.suffix.lower() in SUPPORTED_SUFFIXES and _size_of(p) > 0]
        else:
            candidates = [path]
        for candidate in candidates:
            check_file(candidate, max_bytes)
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def _walk(folder: Path) -> list[Path]:
    def fail(e: OSError) -> None:
        raise GptsError(f"Cannot read the folder {e.filename}: {e.strerror or e}.",
                        "Make it readable, or leave it out.") from e

    files = []
    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(root, name) for name in names if not name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 1  # not skipped as empty: check_file then says what is wrong with it


def _check_suffix(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"{suffix} files" if suffix else "files without a suffix"
        raise GptsError(f"{path}: gpts cannot read {kind} as knowledge.",
                        f"Convert it to a supported format ({', '.join(sorted(SUPPORTED_SUFFIXES))}), e.g. a "
                        ".docx to .pdf or .md, or leave it out.")


def _size(n: int) -> str:
    return f"{n:,} bytes" + (f" ({n / 2**20:,.1f} MB)" if n >= 2**20 else "")


# -- text from files ------------------------------------------------------------------------------------------


def extract(path: Path) -> list[Segment]:
    """The text of a knowledge file as segments with their page (PDF) or line (text-like formats). A file with no
    text in it, or one that cannot be read, is a GptsError naming it. Sizes are `check_file`'s to judge."""
    path = Path(path)
    _check_suffix(path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        segments = _pdf_segments(path)
    elif suffix == ".jsonl":
        segments = _jsonl_segments(path)
    else:
        text = read_text(path)
        if suffix in _HTML_SUFFIXES:
            segments = _html_segments(text)
        elif suffix in _CSV_DELIMITERS:
            segments = _csv_segments(path, text, _CSV_DELIMITERS[suffix])
        elif suffix == ".json":
            segments = _json_segments(path, text)
        else:
            segments = _paragraphs(text)
    if not segments:
        fix = ("It may hold only images of pages (a scan): make its text readable with OCR first (e.g. "
               "`ocrmypdf in.pdf out.pdf`), or leave it out." if suffix == ".pdf" else
               "It has no rows below its header; add some, or leave it out." if suffix in _CSV_DELIMITERS else
               "Put text in it, or leave it out.")
        raise GptsError(f"No text found in {path}.", fix)
    return segments


def _paragraphs(text: str, page: int | None = None) -> list[Segment]:
    """Runs of non-blank lines, with the line each starts on (lines end at "\\n" only, as editors count them)."""
    segments = []
    block: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip()
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            segments.append(Segment("\n".join(block), page, start if page is None else None))
            block = []
    if block:
        segments.append(Segment("\n".join(block), page, start if page is None else None))
    return segments


def _pdf_segments(path: Path) -> list[Segment]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    with open_binary(path) as f:
        try:
            reader = PdfReader(f)
            if reader.is_encrypted and not reader.decrypt(""):  # an owner password alone leaves the text readable
                raise GptsError(f"{path} is encrypted: its text needs a password.",
                                "Save an unencrypted copy (e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`)"
                                " and add that instead.")
            return [s for number, page in enumerate(reader.pages, 1)
                    for s in _paragraphs(page.extract_text() or "", page=number)]
        except GptsError:
            raise
        except DependencyError as e:  # AES encryption needs an optional package
            raise GptsError(f"Cannot read {path}: {e}.",
                            "Install it (pip install cryptography), or save an unencrypted copy of the PDF.") from e
        except Exception as e:  # pypdf raises all kinds of exceptions on damaged files, not only PdfReadError
            raise GptsError(f"Cannot read {path} as a PDF: {str(e) or type(e).__name__}.",
                            "The file is damaged or not a PDF; open and save it again (e.g. print to PDF), "
                            "or leave it out.") from e


def _jsonl_segments(path: Path) -> list[Segment]:
    segments = []
    for record in read_jsonl(path):
        if record.error is not None:
            raise GptsError(f"{path}, line {record.number}: {record.error}.", "Fix that line, or leave the file out.")
        segments.append(Segment(json.dumps(record.value, ensure_ascii=False), None, record.number))
    return segments


def _json_segments(path: Path, text: str) -> list[Segment]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise GptsError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.",
                        "Fix it, or leave the file out.") from e
    # Pretty-printed, so that its lines are short enough to cut at; they are not the file's lines, hence no line.
    return [Segment(json.dumps(value, indent=2, ensure_ascii=False), None, None)]


def _csv_segments(path: Path, text: str, delimiter: str) -> list[Segment]:
    """Each row below the header as one line, "header: value; ...", so that a chunk holding only some rows
    still says what each value is. Empty cells are left out."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    segments = []
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1  # a quoted value may span lines: a row starts after the last
            cells = [" ".join(cell.split()) for cell in row]
            if not any(cells):
                continue
            if header is None:
                header = [name or f"column {i}" for i, name in enumerate(cells, 1)]
                continue
            names = header + [f"column {i}" for i in range(len(header) + 1, len(cells) + 1)]
            segments.append(Segment("; ".join(f"{n}: {c}" for n, c in zip(names, cells) if c), None, line))
    except csv.Error as e:
        raise GptsError(f"{path}, line {reader.line_num}: {e}.", "Fix that row, or leave the file out.") from e
    return segments


# Elements whose text is not the page's content.
_HTML_DROPPED = frozenset({"script", "style", "noscript", "template", "nav", "svg", "canvas", "iframe", "object"})
# Elements that start a new block of text; everything else (a, b, span, code...) runs on inside its block.
_HTML_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "html",
    "legend", "li", "main", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "title", "tr",
    "ul",
})


def _html_segments(html: str) -> list[Segment]:
    """The text of each block element, with the source line its text starts on. Lines are followed as the tree is
    walked: each tag knows the line it starts on, and the text after it adds its own newlines (a start tag
    written over several lines throws the count off until the next tag)."""
    from bs4 import BeautifulSoup, Tag
    from bs4.element import PreformattedString  # comments, CDATA, doctypes, processing instructions

    soup = BeautifulSoup(html, "html.parser")
    segments: list[Segment] = []
    block: Any = None  # the element whose text is being gathered
    parts: list[str] = []
    first_line: int | None = None
    line = 1

    def flush() -> None:
        text = "".join(parts)
        if block is not None and block.name == "pre":  # laid out by its author: keep its lines and indentation
            text = "\n".join(ln.rstrip() for ln in text.split("\n")).strip("\n")
        else:  # whitespace has been collapsed; the newlines left are <br>s
            text = "\n".join(ln for ln in (ln.strip() for ln in text.split("\n")) if ln)
        if text.strip():
            segments.append(Segment(text, None, first_line))

    def enclosing_block(node: Any) -> Any:
        """The nearest block element around `node`, or None when `node` is inside a dropped element."""
        found = None
        for parent in node.parents:
            if parent.name in _HTML_DROPPED:
                return None
            if found is None and (parent.name in _HTML_BLOCKS or parent is soup):
                found = parent
        return found

    for node in soup.descendants:
        if isinstance(node, Tag):
            line = node.sourceline or line
            if node.name in ("br", "td", "th") and enclosing_block(node) is block and parts:
                parts.append("\n" if node.name == "br" else " | ")  # cells of a row read as one line
            continue
        start_line, line = line, line + node.count("\n")
        if isinstance(node, PreformattedString):
            continue
        owner = enclosing_block(node)
        if owner is None:
            continue
        if owner is not block:
            flush()
            block, parts, first_line = owner, [], None
        if first_line is None and node.strip():
            first_line = start_line + node[:len(node) - len(node.lstrip())].count("\n")
        parts.append(str(node) if owner.name == "pre" else re.sub(r"\s+", " ", node))
    flush()
    return segments


# -- chunks ---------------------------------------------------------------------------------------------------

# A sentence ends at . ! ? or … (with closing quotes or brackets) before whitespace, or at 。！？ with or without
# whitespace after, as Chinese and Japanese write them.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』”’）)]*\s*")


@dataclass
class _Unit:
    """A paragraph, sentence or piece of one: chunks are made of whole units."""

    segment: int  # index into the segments
    start: int  # the unit's span in its segment's text
    end: int
    first_line: int | None
    last_line: int | None
    tokens: int


def chunk_segments(segments: list[Segment], count_tokens: Callable[[str], int], chunk_tokens: int = 800,
                   overlap_tokens: int = 400) -> list[Chunk]:
    """Chunks of at most `chunk_tokens` tokens (as `count_tokens` counts them), each starting with the last units
    of the one before that together hold at most `overlap_tokens`. Units are paragraphs (segments); a paragraph
    too long for a chunk is cut into sentences, and a sentence too long into pieces cut at a line break or a space
    where there is one."""
    if chunk_tokens < _MIN_CHUNK_TOKENS or not 0 <= overlap_tokens <= chunk_tokens // 2:
        raise GptsError(f"Cannot cut chunks of {chunk_tokens} tokens overlapping by {overlap_tokens}.",
                        f"Set retrieval.chunk_tokens to at least {_MIN_CHUNK_TOKENS} and retrieval.overlap_tokens "
                        "from 0 to half of it (OpenAI's defaults: 800 and 400).")
    units = [u for i, s in enumerate(segments) for u in _units(i, s, count_tokens, chunk_tokens)]
    gap_tokens: dict[str, int] = {}

    def gap(a: _Unit, b: _Unit) -> str:
        """What goes between two units in a chunk: the text between them when they are of one paragraph."""
        return segments[a.segment].text[a.end:b.start] if a.segment == b.segment else "\n\n"

    def gap_cost(a: _Unit, b: _Unit) -> int:
        text = gap(a, b)
        if text not in gap_tokens:
            gap_tokens[text] = count_tokens(text)
        return gap_tokens[text]

    def text_of(span: list[_Unit]) -> str:
        pieces = [segments[span[0].segment].text[span[0].start:span[0].end]]
        for a, b in itertools.pairwise(span):
            pieces += [gap(a, b), segments[b.segment].text[b.start:b.end]]
        return "".join(pieces)

    chunks: list[Chunk] = []
    start = new = 0  # the chunk's first unit, and its first unit that the chunk before did not hold
    while new < len(units):
        # Units are counted alone; their sum (and the gaps') estimates the chunk, which is then counted whole.
        end, total = start, 0
        while end < len(units):
            cost = units[end].tokens + (gap_cost(units[end - 1], units[end]) if end > start else 0)
            if end > new and total + cost > chunk_tokens:
                break
            total, end = total + cost, end + 1
        text = text_of(units[start:end])
        tokens = count_tokens(text)
        while tokens > chunk_tokens and end - start > 1:  # tokens merged or split across a gap: give up a unit
            if end - 1 > new:
                end -= 1
            else:
                start += 1
            text = text_of(units[start:end])
            tokens = count_tokens(text)
        chunks.append(_chunk(len(chunks), text, tokens, units[start:end], segments))
        new, start = end, _overlap_start(units, start, end, overlap_tokens, chunk_tokens, gap_cost)
    return chunks


def _overlap_start(units: list[_Unit], start: int, end: int, overlap_tokens: int, chunk_tokens: int,
                   gap_cost: Callable[[_Unit, _Unit], int]) -> int:
    """Where the next chunk starts: the last units of this one, at most `overlap_tokens` of them, never all of
    them (so that chunks advance), and leaving room for the next unit (so that the next chunk has something new)."""
    if end == len(units):
        return end
    after = units[end].tokens + gap_cost(units[end - 1], units[end])  # what the next chunk must have room for
    first, total = end, 0
    while first - 1 > start:
        cost = units[first - 1].tokens + (gap_cost(units[first - 1], units[first]) if first < end else 0)
        if total + cost > overlap_tokens or total + cost + after > chunk_tokens:
            break
        first, total = first - 1, total + cost
    return first


def _chunk(index: int, text: str, tokens: int, units: list[_Unit], segments: list[Segment]) -> Chunk:
    pages = [p for u in units if (p := segments[u.segment].page) is not None]
    lines = [n for u in units for n in (u.first_line, u.last_line) if n is not None]
    return Chunk(index, text, (min(pages), max(pages)) if pages else None,
                 (min(lines), max(lines)) if lines else None, tokens)


def _units(index: int, segment: Segment, count_tokens: Callable[[str], int], chunk_tokens: int) -> Iterator[_Unit]:
    text = segment.text
    newlines = [i for i, c in enumerate(text) if c == "\n"] if segment.line is not None else []

    def unit(start: int, end: int, tokens: int) -> _Unit:
        if segment.line is None:
            return _Unit(index, start, end, None, None, tokens)
        return _Unit(index, start, end, segment.line + bisect.bisect_left(newlines, start),
                     segment.line + bisect.bisect_left(newlines, end), tokens)

    for start, end in _spans(text, 0, len(text)):
        tokens = count_tokens(text[start:end])
        if tokens <= chunk_tokens:
            yield unit(start, end, tokens)
            continue
        for s_start, s_end in _sentences(text, start, end):
            tokens = count_tokens(text[s_start:s_end])
            if tokens <= chunk_tokens:
                yield unit(s_start, s_end, tokens)
            else:
                for p_start, p_end, p_tokens in _pieces(text, s_start, s_end, tokens, count_tokens, chunk_tokens):
                    yield unit(p_start, p_end, p_tokens)


def _spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) without the whitespace at either end, or nothing when it is all whitespace."""
    part = text[start:end]
    stripped = part.strip()
    if not stripped:
        return []
    first = start + len(part) - len(part.lstrip())
    return [(first, first + len(stripped))]


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    for match in _SENTENCE_END.finditer(text, start, end):
        spans += _spans(text, start, match.end())
        start = match.end()
    return spans + _spans(text, start, end)


def _pieces(text: str, start: int, end: int, tokens: int, count_tokens: Callable[[str], int],
            chunk_tokens: int) -> Iterator[tuple[int, int, int]]:
    """[start, end), of `tokens` tokens, cut into pieces of at most `chunk_tokens` tokens: each the longest that
    fits, shortened to its last line break or space when one is in its second half."""
    guess = (end - start) * chunk_tokens // tokens  # the text's own characters per token
    while start < end:
        fits = _longest_fit(text, start, end, guess, count_tokens, chunk_tokens)
        guess = fits  # the pieces of one text tend to be alike
        hard = start + max(fits, 1)  # one character at least, however many tokens, so that cutting advances
        cut = hard if hard == end or text[hard].isspace() else _break_before(text, start, hard)
        spans = [(a, b, count_tokens(text[a:b])) for a, b in _spans(text, start, cut)]
        if cut != hard and spans and spans[0][2] > chunk_tokens:  # a tokenizer for which less text is more tokens
            cut = hard
            spans = [(a, b, count_tokens(text[a:b])) for a, b in _spans(text, start, cut)]
        yield from spans
        start = cut


def _longest_fit(text: str, start: int, end: int, guess: int, count_tokens: Callable[[str], int],
                 chunk_tokens: int) -> int:
    """The length of the longest prefix of [start, end) of at most `chunk_tokens` tokens (0 when not even one
    character fits): galloping from `guess` until the answer is bracketed, then bisecting. Near guesses take a
    few counts of a chunk's worth of text, never one of the whole rest of a long text."""
    def fits(n: int) -> bool:
        return count_tokens(text[start:start + n]) <= chunk_tokens

    rest = end - start
    guess = min(max(guess, 1), rest)
    step = 1
    if fits(guess):
        low = guess
        while low < rest:
            high = min(low + step, rest)
            if not fits(high):
                break
            low, step = high, 2 * step
        else:
            return rest
    else:
        high = guess
        while (low := max(high - step, 0)) > 0 and not fits(low):
            high, step = low, 2 * step
    while high - low > 1:  # `low` fits (or is 0), `high` does not
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def _break_before(text: str, start: int, end: int) -> int:
    """Where to cut [start, end) short: at its last line break in its second half, else at its last space
    there, else at `end`."""
    middle = (start + end) // 2 + 1
    for separator in ("\n", " "):
        at = text.rfind(separator, middle, end)
        if at != -1:
            return at
    return end
