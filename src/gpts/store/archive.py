"""A custom GPT as one file to share: NAME.gpt, a zip archive of its spec, its knowledge files and its adapter.

Bundles come from other people, so importing one treats it as hostile until proven otherwise: every name, file
type, size and ratio is checked before anything is written, each member is unpacked counting its bytes rather
than trusting what the archive declares, and each is checked against the manifest's sha256. A bundle that fails
any check leaves nothing behind.

Layout: spec.json (the spec), the members under their archive names, and manifest.json:
{"format": "gpts-bundle", "version": 1, "spec": "spec.json", "members": {NAME: {"sha256": HEX, "size": BYTES}}},
where the members include spec.json and leave out manifest.json itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpts.errors import GptsError
from gpts.fileio import atomic_path, check_writable, open_binary, temp_dir_beside

FORMAT = "gpts-bundle"
VERSION = 1

MANIFEST = "manifest.json"
SPEC = "spec.json"

_CHUNK = 1024 * 1024
# manifest.json and spec.json are read whole into memory: generous for a thousand members or a long prompt.
_MAX_JSON_BYTES = 16 * 1024 * 1024
# A member (or a whole bundle) smaller than this cannot be a bomb worth the name, whatever its ratio; small files
# of repetitive text (a table of blanks, a log) can compress better than a bomb threshold without being one.
_RATIO_FLOOR = 1024 * 1024
_DRIVE = re.compile(r"[A-Za-z]:")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# What a member's external_attr may say it is, when that is not what its name says (a file, or a folder for a
# name ending in '/'), in words.
_WRONG_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO (named pipe)",
                  stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
                  stat.S_IFDIR: "marked as a folder but named as a file",
                  stat.S_IFREG: "marked as a file but named as a folder"}
# The exceptions zipfile lets through for an archive that is damaged: truncated, bad CRC, garbled headers.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError)


@dataclass(frozen=True)
class Limits:
    """What read_bundle accepts; anything past these is refused before a byte is unpacked."""

    max_members: int = 1000
    max_total_bytes: int = 4 * 1024**3  # unpacked
    max_ratio: float = 200.0  # unpacked/compressed, per member and overall; zip bombs are far above


@dataclass(frozen=True)
class _Entry:
    """One member as the manifest declares it."""

    sha256: str
    size: int


# -- names ------------------------------------------------------------------------------------------------------


def _name_problem(name: str) -> str | None:
    """Why `name` cannot be a member's name, or None when it can. The same rules hold for writing and reading,
    so that a bundle gpts writes is one gpts imports."""
    if not name:
        return "is empty"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash (zip names separate folders with '/')"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "contains a control character"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' component"
    if "" in parts or "." in parts:
        return "has an empty or '.' component"
    return None


def _folding(name: str) -> str:
    # macOS and Windows file systems ignore case, and macOS Unicode normalization: names equal under both collide.
    return unicodedata.normalize("NFC", name).casefold()


def _check_names(names: list[str], folders: list[str], fail: Callable[[str], GptsError]) -> None:
    """Refuse unsafe names, duplicates (exact or only in case), and a name that is both a file and a folder.
    `names` are the files; `folders` are directory entries (zip may hold them; their trailing '/' removed)."""
    seen: dict[str, str] = {}
    for name in [*names, *folders]:
        problem = _name_problem(name)
        if problem:
            raise fail(f"member {name!r} {problem}")
        key = _folding(name)
        if key in seen:
            if seen[key] == name:
                raise fail(f"member {name!r} appears twice")
            raise fail(f"members {seen[key]!r} and {name!r} differ only in case, and would be one file on macOS "
                       "and Windows")
        seen[key] = name
    files = {_folding(name): name for name in names}
    for name in [*names, *folders]:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if _folding(parent) in files:
                raise fail(f"{files[_folding(parent)]!r} is a file, yet member {name!r} puts it in a folder by "
                           "that name")


# -- writing ----------------------------------------------------------------------------------------------------


def write_bundle(out: Path, spec: dict, members: dict[str, Path]) -> Path:
    """Write the bundle `out`: `spec` as spec.json, each file of `members` under its archive name (such as
    "knowledge/handbook.md" or "adapter/adapter_model.safetensors"), and the manifest. Atomic: `out` is the old
    file or the whole new one. Returns `out`."""
    out = Path(out)

    def fail(problem: str) -> GptsError:
        return GptsError(f"Cannot write {out}: {problem}.",
                         "Give each file a distinct relative name, with '/' between folders and no '..'.")

    for reserved in (MANIFEST, SPEC):
        if any(_folding(name) == reserved for name in members):
            raise fail(f"the member name {reserved!r} is the bundle's own")
    _check_names([SPEC, *members], [], fail)
    most = Limits().max_members - 2  # room for spec.json and manifest.json
    if len(members) > most:
        raise GptsError(f"Cannot write {out}: {len(members):,} files are more than a bundle may hold ({most:,}); "
                        "gpts would refuse to import it.",
                        "Combine small knowledge files into fewer, larger ones.")

    spec_bytes = (json.dumps(spec, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = {SPEC: _Entry(hashlib.sha256(spec_bytes).hexdigest(), len(spec_bytes))}
        archive.writestr(_member_info(SPEC, time.time(), len(spec_bytes)), spec_bytes)
        for name, source in members.items():
            entries[name] = _write_member(archive, name, Path(source))
        manifest = {"format": FORMAT, "version": VERSION, "spec": SPEC,
                    "members": {name: {"sha256": e.sha256, "size": e.size} for name, e in entries.items()}}
        manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        archive.writestr(_member_info(MANIFEST, time.time(), len(manifest_bytes)), manifest_bytes)
    return out


def _member_info(name: str, mtime: float, size: int) -> zipfile.ZipInfo:
    # Zip times start in 1980 (a day past its first second, in any time zone); the mode is a plain readable file,
    # whatever the source's permissions were.
    info = zipfile.ZipInfo(name, time.localtime(max(mtime, 315532800 + 86400))[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix: the mode in external_attr means what it says
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.file_size = size  # lets zipfile choose ZIP64 for a file over 2 GiB
    return info


def _write_member(archive: zipfile.ZipFile, name: str, source: Path) -> _Entry:
    digest = hashlib.sha256()
    size = 0
    with open_binary(source) as f:
        status = os.fstat(f.fileno())
        info = _member_info(name, status.st_mtime, status.st_size)
        with archive.open(info, "w") as sink:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
    return _Entry(digest.hexdigest(), size)


# -- reading ----------------------------------------------------------------------------------------------------


def read_bundle(path: Path, dest: Path, limits: Limits = Limits()) -> tuple[dict, dict[str, Path]]:
    """Import the bundle `path` into the new folder `dest`. Returns (the spec, {archive name: extracted path} for
    every member but spec.json, which is extracted too). Nothing is written until the whole archive has passed
    its checks, and a failure at any point leaves neither `dest` nor anything else behind."""
    path, dest = Path(path), Path(dest)
    if os.path.lexists(dest):
        raise GptsError(f"Cannot import {path} into {dest}: it already exists.",
                        "Choose a folder that does not exist yet; the import creates it.")
    check_writable(dest)
    with open_binary(path) as f:
        archive = _open_archive(path, f)
        with archive, _damaged_is_an_error(path):
            spec, entries = _verify(path, archive, os.fstat(f.fileno()).st_size, limits)
            _extract(path, archive, entries, dest)
    return spec, {name: dest / name for name in entries if name != SPEC}


def _refusal(path: Path, problem: str) -> GptsError:
    return GptsError(f"Refusing to import {path}: {problem}.",
                     "The bundle is damaged or was crafted to harm the machine that imports it; do not use it. "
                     "Ask its sender to export it again with gpts.")


@contextmanager
def _damaged_is_an_error(path: Path) -> Iterator[None]:
    try:
        yield
    except _DAMAGED as e:
        raise GptsError(f"{path} is damaged: {e}.",
                        "Copy or download it again; if it still fails, ask its sender to export it again.") from e


def _open_archive(path: Path, f: Any) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(f)
    except _DAMAGED as e:
        f.seek(0)
        if f.read(4) == b"PK\x03\x04":  # begins as a zip does: a zip that lost its end
            raise GptsError(f"{path} is damaged or truncated: {e}.",
                            "Copy or download it again; the copy you have is incomplete.") from e
        raise GptsError(f"{path} is not a .gpt bundle (it is not a zip archive).",
                        "Check the path: a bundle is the NAME.gpt file that `gpts` exported.") from e


def _verify(path: Path, archive: zipfile.ZipFile, archive_bytes: int,
            limits: Limits) -> tuple[dict, dict[str, _Entry]]:
    """Check everything that can be checked without unpacking the members; returns (spec, manifest entries)."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise _refusal(path, f"it holds {len(infos):,} members, more than the {limits.max_members:,} allowed")
    for info in infos:
        _check_member(path, info)
    _check_names([info.filename for info in infos if not info.is_dir()],
                 [info.filename[:-1] for info in infos if info.is_dir()], lambda problem: _refusal(path, problem))
    files = {info.filename: info for info in infos if not info.is_dir()}  # the names are unique by now
    _check_sizes(path, infos, archive_bytes, limits)

    if MANIFEST not in files:
        raise GptsError(f"{path} is not a .gpt bundle: it has no {MANIFEST}.",
                        "Check the path: a bundle is the NAME.gpt file that `gpts` exported.")
    entries = _parse_manifest(path, _read_json_bytes(path, archive, files[MANIFEST]))
    unlisted = sorted(files.keys() - entries.keys() - {MANIFEST})
    if unlisted:
        raise _refusal(path, f"member {unlisted[0]!r} is not listed in {MANIFEST}")
    missing = sorted(entries.keys() - files.keys())
    if missing:
        raise _refusal(path, f"{MANIFEST} lists {missing[0]!r}, which is missing from the archive")
    for name, entry in entries.items():
        if files[name].file_size != entry.size:
            raise _refusal(path, f"member {name!r} is {files[name].file_size:,} bytes, but {MANIFEST} says "
                                 f"{entry.size:,}")

    spec_bytes = _read_json_bytes(path, archive, files[SPEC])
    if hashlib.sha256(spec_bytes).hexdigest() != entries[SPEC].sha256:
        raise _refusal(path, f"member {SPEC!r} does not match its sha256 in {MANIFEST}")
    spec = _parse_json(path, SPEC, spec_bytes)
    if not isinstance(spec, dict):
        raise _refusal(path, f"{SPEC} is not a JSON object")
    return spec, entries


def _check_member(path: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a member that is not a plain file or folder, or that zipfile would unpack unchecked."""
    # orig_filename is the name as the archive holds it, before zipfile cuts it at a NUL or turns '\' into '/'.
    if info.orig_filename != info.filename:
        raise _refusal(path, f"member {info.orig_filename!r} has a name that changes on unpacking")
    kind = stat.S_IFMT(info.external_attr >> 16)
    expected = stat.S_IFDIR if info.is_dir() else stat.S_IFREG
    if kind not in (0, expected):  # 0: the archiver recorded no file type (zips made on Windows)
        raise _refusal(path, f"member {info.filename!r} is {_WRONG_KINDS.get(kind, 'a special file')}, "
                             "and a bundle holds only files and folders")
    if info.flag_bits & 0x61:  # 0x01 and 0x40: encrypted; 0x20: patch data (zipfile cannot read either)
        raise _refusal(path, f"member {info.filename!r} is encrypted or patch data, which bundles never are")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _refusal(path, f"member {info.filename!r} uses compression method {info.compress_type}; bundles "
                             "are stored or deflated")
    if info.is_dir() and info.file_size:
        raise _refusal(path, f"folder {info.filename!r} has contents of its own")


def _check_sizes(path: Path, infos: list[zipfile.ZipInfo], archive_bytes: int, limits: Limits) -> None:
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise _refusal(path, f"it unpacks to {total:,} bytes, more than the {limits.max_total_bytes:,} allowed")
    for info in infos:
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * info.compress_size:
            ratio = info.file_size / max(info.compress_size, 1)
            raise _refusal(path, f"member {info.filename!r} unpacks to {ratio:,.0f} times its compressed size "
                                 f"(at most {limits.max_ratio:g} allowed): it is a zip bomb")
    # Against the file's real size, not the members' declared compressed sizes: a bomb can have many members
    # share one stretch of compressed data, which their declared sizes count many times over.
    if total > _RATIO_FLOOR and total > limits.max_ratio * archive_bytes:
        raise _refusal(path, f"it unpacks to {total / max(archive_bytes, 1):,.0f} times its size (at most "
                             f"{limits.max_ratio:g} allowed): it is a zip bomb")


def _chunks(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's bytes as they unpack, stopping at the first byte past its declared size: the declared size is
    what the limits were checked against, and a lying header must not get more past them."""
    count = 0
    with archive.open(info) as source:
        while chunk := source.read(_CHUNK):
            count += len(chunk)
            if count > info.file_size:
                raise _refusal(path, f"member {info.filename!r} unpacks to more than the {info.file_size:,} "
                                     "bytes it declares")
            yield chunk


def _read_json_bytes(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > _MAX_JSON_BYTES:
        raise _refusal(path, f"{info.filename} is {info.file_size:,} bytes, more than the {_MAX_JSON_BYTES:,} "
                             "allowed")
    return b"".join(_chunks(path, archive, info))


def _parse_json(path: Path, name: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _refusal(path, f"{name} is not valid JSON ({e})") from e


def _parse_manifest(path: Path, data: bytes) -> dict[str, _Entry]:
    """The members a well-formed manifest of a version this code reads declares, spec.json among them."""
    manifest = _parse_json(path, MANIFEST, data)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GptsError(f"{path} is not a .gpt bundle: its {MANIFEST} is not a {FORMAT} manifest.",
                        "Check the path: a bundle is the NAME.gpt file that `gpts` exported.")
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        raise _refusal(path, f"{MANIFEST} has version {version!r}, not a positive whole number")
    if version > VERSION:
        raise GptsError(f"{path} was made by a newer gpts (bundle version {version}; this gpts reads version "
                        f"{VERSION}).", "Upgrade gpts to import it: pip install --upgrade gpts")

    members = manifest.get("members")
    if not isinstance(members, dict):
        raise _refusal(path, f"{MANIFEST} has no \"members\" object")
    entries = {}
    for name, entry in members.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and _SHA256.fullmatch(entry["sha256"]) and type(entry.get("size")) is int and entry["size"] >= 0):
            raise _refusal(path, f"{MANIFEST} entry {name!r} is not {{\"sha256\": 64 hex digits, \"size\": "
                                 "bytes}")
        entries[name] = _Entry(entry["sha256"], entry["size"])
    if manifest.get("spec") != SPEC or SPEC not in entries:
        raise _refusal(path, f"{MANIFEST} names {manifest.get('spec')!r} as the spec; a version {VERSION} bundle "
                             f"keeps it in {SPEC}, and lists it")
    return entries


def _extract(path: Path, archive: zipfile.ZipFile, entries: dict[str, _Entry], dest: Path) -> None:
    """Unpack the members into a new folder beside `dest`, and rename it to `dest` once every one has checked
    out; the parent folders this creates go again when it fails."""
    created = [parent for parent in dest.absolute().parents if not parent.exists()]  # deepest first
    try:
        with temp_dir_beside(dest) as tmp:
            root = (tmp / dest.name).resolve()
            root.mkdir()
            for name, entry in entries.items():
                _extract_member(path, archive, archive.getinfo(name), entry, root)
            try:
                os.rename(root, dest)  # fails, rather than merge, if a non-empty dest appeared meanwhile
            except OSError as e:
                raise GptsError(f"Cannot import {path} into {dest}: {e.strerror or e}.",
                                "Choose a folder that does not exist yet, on a disk with room to spare.") from e
    except BaseException:
        for parent in created:
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _extract_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, entry: _Entry, root: Path) -> None:
    target = (root / info.filename).resolve()
    if not target.is_relative_to(root):  # the names were checked; this guards against a flaw in that check
        raise _refusal(path, f"member {info.filename!r} would be written outside {root}")
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as sink:  # "x": never through a file (or link) already there
            for chunk in _chunks(path, archive, info):
                digest.update(chunk)
                sink.write(chunk)
    except OSError as e:
        raise GptsError(f"Cannot import {path}: writing {info.filename} failed: {e.strerror or e}.",
                        "Choose a folder on a disk with room to spare.") from e
    if digest.hexdigest() != entry.sha256:
        raise _refusal(path, f"member {info.filename!r} does not match its sha256 in {MANIFEST}")
