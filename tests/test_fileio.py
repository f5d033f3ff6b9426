"""Atomic writes and what a killed writer leaves; reading JSONL and text that is not UTF-8."""

import os

import pytest
import torch

from gpts.errors import GptsError
from gpts.fileio import (atomic_path, read_jsonl, read_text, remove_stale_temp_dirs, save_safetensors, sniff_encoding,
                         write_text)

from helpers import killed_writer


def leftovers(target) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "model.gguf"
    killed_writer(target)
    (tmp_path / ".model.gguf.k3j_9xq2.tmp").mkdir()  # as gpts 0.1 named them, without the process
    assert len(leftovers(target)) == 2 and not target.exists()
    write_text(target, "a whole model")
    assert target.read_text() == "a whole model" and leftovers(target) == []


def test_a_running_writer_and_other_targets_are_left_alone(tmp_path):
    target = tmp_path / "model"
    running = tmp_path / f".model.{os.getpid()}-abcdefgh.tmp"
    other_target = tmp_path / ".model.v2.abcdefgh.tmp"  # the temporary directory of "model.v2"
    running.mkdir()
    other_target.mkdir()
    remove_stale_temp_dirs(target)
    assert running.is_dir() and other_target.is_dir()


def test_an_error_inside_leaves_the_old_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and leftovers(target) == []


def test_a_directory_moved_aside_by_a_killed_writer_comes_back(tmp_path):
    """atomic_path replaces a directory in two moves: the old one aside, the new one in. Killed between them, the
    writer leaves the target missing and the old directory in its temporary one."""
    stale = tmp_path / ".checkpoint.99999999-abcdefgh.tmp"
    (stale / ".old").mkdir(parents=True)
    (stale / ".old" / "state.pt").write_text("the run's only checkpoint")
    remove_stale_temp_dirs(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "state.pt").read_text() == "the run's only checkpoint" and not stale.exists()


def test_safetensors_files_get_the_usual_permissions(tmp_path):
    save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors", {"format": "pt"})
    (tmp_path / "plain.txt").write_text("as open() makes files")
    assert (tmp_path / "w.safetensors").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


# -- reading ----------------------------------------------------------------------------------------------------


def test_read_jsonl_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes('\ufeff{"a": "b\u2028c"}\n\n  \n{"a": 2\n["ok"]\n'.encode() + b'{"a": "\xff"}\n')
    seen = []
    lines = list(read_jsonl(path, on_line=seen.append))
    assert [(x.number, x.value, x.error) for x in lines] == [
        (1, {"a": "b\u2028c"}, None), (4, None, "Expecting ',' delimiter, column 8"), (5, ["ok"], None),
        (6, None, "not valid UTF-8")]
    assert b"".join(seen) == path.read_bytes()  # every line, blank ones too
    [*_, last] = read_jsonl(path, replace_invalid_utf8=True)
    assert last.value == {"a": "\ufffd"} and last.invalid_utf8_at == path.read_bytes().rindex(b"\xff")


@pytest.mark.parametrize("encoding, bom, name", [
    ("utf-16-le", b"\xff\xfe", "UTF-16"), ("utf-16-be", b"\xfe\xff", "UTF-16"), ("utf-16-le", b"", "UTF-16LE"),
    ("utf-16-be", b"", "UTF-16BE"), ("utf-32-le", b"", "UTF-32LE"), ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32"),
])
def test_wide_encodings_are_named(encoding, bom, name, tmp_path):
    text = "Dear diary, today I trained a model. Ça marche.\n" * 3
    assert sniff_encoding(bom + text.encode(encoding)) == name
    path = tmp_path / "notes.txt"
    path.write_bytes(bom + text.encode(encoding))
    with pytest.raises(GptsError) as e:
        read_text(path)
    assert f"is {name} text" in e.value.problem and f"iconv -f {name} -t UTF-8" in e.value.fix
    with pytest.raises(GptsError, match=name):
        list(read_jsonl(path))


def test_other_bytes_are_not_taken_for_wide_text():
    assert sniff_encoding("plain UTF-8, café".encode()) is None
    assert sniff_encoding(bytes(range(256)) * 4) is None  # binary
    assert sniff_encoding(b"") is None


def test_read_text(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffcafé".encode())
    assert read_text(tmp_path / "a.txt") == "café"
    (tmp_path / "b.txt").write_bytes("café".encode("cp1252"))
    with pytest.raises(GptsError, match=r"not UTF-8 text \(byte 3 "):
        read_text(tmp_path / "b.txt")
    with pytest.raises(GptsError, match="No such file"):
        read_text(tmp_path / "c.txt")
