"""Files as gpts reads and writes them.

Writes are atomic: a reader (or a crash) sees the old file or the new one, never half of one. Each write goes to a
temporary directory beside its target, named for the target and the writing process, and is renamed into place;
the next write to the same target removes what a crashed or killed writer left there.

Reads name the file and line of whatever is wrong: JSON, JSONL, and text that is not UTF-8.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpts.errors import GptsError

# What tempfile.mkdtemp puts between prefix and suffix: 8 characters of this alphabet.
_RANDOM = r"[a-z0-9_]{8}"


def _file_mode() -> int:
    mask = os.umask(0)  # the umask can only be read by setting it: done once, at import, before any thread
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()  # what open() gives a new file here


# -- writing ----------------------------------------------------------------------------------------------------


@contextmanager
def temp_dir_beside(path: Path) -> Iterator[Path]:
    """A new directory beside `path` (".NAME.PID-XXXXXXXX.tmp"), removed when the block ends. The temporary
    directories of earlier writers to `path` that are no longer running go first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _cannot_write(path, e) from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temp_dirs(path: Path) -> None:
    """Remove the temporary directories that writers of `path` left when they died (killed, crashed, power lost):
    those whose process is gone, and those of gpts versions that did not name the process. A writer that died
    between moving an old directory aside and moving the new one in left the old one there: it goes back first."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?{_RANDOM}\.tmp")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _running(match[1]):
            if (entry / ".old").exists() and not path.exists():
                os.replace(entry / ".old", path)
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or a number no process has
        return True
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (a file or a directory)."""
    path = Path(path)
    check_writable(path)
    with temp_dir_beside(path) as tmp:
        target = tmp / path.name
        yield target
        try:
            if path.is_dir() and not path.is_symlink():
                # A directory cannot be renamed over a non-empty one: move the old one aside first.
                os.replace(path, tmp / ".old")
            os.replace(target, path)
        except OSError as e:
            raise _cannot_write(path, e) from e


def check_writable(path: str | Path) -> None:
    """Fail at once, before any long work, when `path` can never be written: a file stands where a parent
    directory must go, or the nearest existing parent is read-only."""
    path = Path(path).absolute()
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise GptsError(f"Cannot write {path}: {parent} is a file, not a directory.", "Choose another output path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GptsError(f"Cannot write {path}: the directory {parent} is not writable.",
                        "Choose an output path in a directory you can write to.")


def is_occupied(path: Path) -> bool:
    """Whether `path` is a file or a directory with something in it (an empty directory may be reused)."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _cannot_write(path: Path, e: OSError) -> GptsError:
    return GptsError(f"Cannot write {path}: {e.strerror or e}.",
                     "Choose an output path in a directory you can write to, on a disk with room to spare.")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_safetensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str]) -> None:
    """safetensors.torch.save_file, with the permissions every other file gets (it creates its files 0600)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, FILE_MODE)


# -- reading ----------------------------------------------------------------------------------------------------


def read_json(path: str | Path) -> Any:
    """A JSON file's contents; a missing, unreadable or malformed file is a GptsError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptsError(f"Cannot read {path}: {e}.", "The file is damaged or not JSON; replace it with a valid one.") from e


def open_binary(path: Path):
    """`path` opened for reading bytes; what keeps it from being read is a GptsError naming it."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise GptsError(f"No such file: {path}.", "Check the path.") from None
    except IsADirectoryError:
        raise GptsError(f"{path} is a folder, not a file.", "Pass a file.") from None
    except PermissionError as e:
        raise GptsError(f"Cannot read {path}: permission denied.", "Make it readable, or leave it out.") from e
    except OSError as e:
        raise GptsError(f"Cannot read {path}: {e.strerror or e}.", "Check the file, or leave it out.") from e


def sniff_encoding(head: bytes) -> str | None:
    """The encoding of text that starts with `head` when it is one of the wide Unicode encodings (UTF-16 and UTF-32,
    with or without a byte-order mark), as iconv names it; None otherwise (UTF-8, another 8-bit encoding, binary)."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if head.startswith(bom):
            return name
    sample = head[:4096 - 4096 % 4]
    if len(sample) < 4 or b"\0" not in sample:
        return None

    def nul_share(offset: int, step: int) -> float:
        column = sample[offset::step]
        return column.count(0) / len(column)

    # Mostly-ASCII text in a wide encoding has its high bytes, and only those, zero.
    if nul_share(0, 4) < 0.05 and min(nul_share(i, 4) for i in (1, 2, 3)) > 0.9:
        return "UTF-32LE"
    if nul_share(3, 4) < 0.05 and min(nul_share(i, 4) for i in (0, 1, 2)) > 0.9:
        return "UTF-32BE"
    if nul_share(0, 2) < 0.05 and nul_share(1, 2) > 0.3:
        return "UTF-16LE"
    if nul_share(1, 2) < 0.05 and nul_share(0, 2) > 0.3:
        return "UTF-16BE"
    return None


def not_utf8_error(path: Path, encoding: str) -> GptsError:
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return GptsError(f"{path} is {encoding} text; gpts reads UTF-8.",
                     f"Convert it: iconv -f {encoding} -t UTF-8 '{path}' > '{converted}'")


def check_not_wide(path: Path, head: bytes) -> None:
    """Raise the not-UTF-8 error for a UTF-16 or UTF-32 file, whose NUL bytes would otherwise pass for binary."""
    encoding = sniff_encoding(head)
    if encoding is not None:
        raise not_utf8_error(path, encoding)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents (a byte-order mark dropped); other encodings are a GptsError saying which it
    is and how to convert it."""
    path = Path(path)
    with open_binary(path) as f:
        data = f.read()
    check_not_wide(path, data[:4096])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise GptsError(f"{path} is not UTF-8 text (byte {e.start:,} is not UTF-8).",
                        f"Convert it, e.g. from Windows-1252: iconv -f WINDOWS-1252 -t UTF-8 '{path}' > "
                        f"'{path.with_name(f'{path.stem}.utf8{path.suffix}')}'") from e


@dataclass
class JsonLine:
    """One non-blank line of a JSONL file."""

    number: int  # 1-based
    value: Any = None  # the parsed JSON value, when `error` is None
    error: str | None = None  # why the line is not JSON: "not valid UTF-8", or the parser's message and column
    invalid_utf8_at: int | None = None  # with replace_invalid_utf8: the file offset of the line's first bad byte


def read_jsonl(path: str | Path, on_line: Callable[[bytes], None] | None = None,
               replace_invalid_utf8: bool = False) -> Iterator[JsonLine]:
    """Each non-blank line of a JSONL file, parsed, as it is read (memory holds one line). Lines end at "\\n"
    only (JSON strings may hold U+2028, which str.splitlines() would split at). `on_line` sees the bytes of every
    line, blank ones too, to hash the file or measure progress. With `replace_invalid_utf8`, bytes that are not
    UTF-8 become U+FFFD (and `invalid_utf8_at` says where) instead of making the line an error.

    A missing or unreadable file, or one in UTF-16/32, is a GptsError; a line that is not JSON comes back with
    `error` set, for the caller to report alone or with the others."""
    path = Path(path)
    with open_binary(path) as f:
        check_not_wide(path, f.read(4096))
        f.seek(0)
        offset = 0
        for number, raw in enumerate(f, 1):
            if on_line is not None:
                on_line(raw)
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            line = JsonLine(number)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not replace_invalid_utf8:
                    line.error = "not valid UTF-8"
                    yield line
                    continue
                line.invalid_utf8_at = start + e.start
                text = raw.decode("utf-8", errors="replace")
            text = text.rstrip("\r\n")  # so that an error's column is on this line
            try:
                line.value = json.loads(text.removeprefix("\ufeff") if number == 1 else text)
            except json.JSONDecodeError as e:
                line.error = f"{e.msg}, column {e.colno}"
            yield line
