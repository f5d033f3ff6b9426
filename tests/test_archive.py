"""A custom GPT as one .gpt file: a round trip, and every way a hostile or damaged bundle is refused, leaving
nothing behind."""

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import unicodedata
import warnings
import zipfile
from pathlib import Path

import pytest

from gpts.store.archive import FORMAT, VERSION, Limits, read_bundle, write_bundle
from gpts.errors import GptsError

SPEC = {"name": "Handbook helper", "instructions": "Answer from the handbook — in English.", "temperature": 0.2}


def everything(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def knowledge(tmp_path) -> dict[str, Path]:
    """Files on disk under tmp_path/in, by archive name: text, an empty file, and 1.5 MiB of incompressible bytes
    (more than one read chunk)."""
    src = tmp_path / "in"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "handbook.md").write_text("# Handbook\n\nVacation: 25 days.\n")
    (src / "empty.txt").write_bytes(b"")
    (src / "adapter.safetensors").write_bytes(os.urandom(3 * 512 * 1024))
    return {"knowledge/handbook.md": src / "docs" / "handbook.md", "knowledge/sub/empty.txt": src / "empty.txt",
            "adapter/adapter_model.safetensors": src / "adapter.safetensors"}


def crafted(tmp_path, members: list, manifest: dict | None = None, unlisted: tuple[str, ...] = (),
            declared: dict[str, dict] | None = None) -> Path:
    """tmp_path/in/crafted.gpt, written member by member as an attacker would: `members` are (name or ZipInfo,
    bytes) after spec.json. The manifest lists every member with its true sha256 and size (so that only the check
    under test can refuse it), less `unlisted`; `declared` changes or adds entries; `manifest` replaces keys."""
    path = tmp_path / "in" / "crafted.gpt"
    path.parent.mkdir(exist_ok=True)
    spec = json.dumps(SPEC).encode()
    members = [("spec.json", spec), *members]
    listed = {}
    for name, data in members:
        name = name.filename if isinstance(name, zipfile.ZipInfo) else name
        if name not in unlisted and not name.endswith("/"):
            listed[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    for name, entry in (declared or {}).items():
        listed[name] = {**listed.get(name, {}), **entry}
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names some tests write on purpose
        for name, data in members:
            archive.writestr(name, data)
        archive.writestr("manifest.json", json.dumps({"format": FORMAT, "version": VERSION, "spec": "spec.json",
                                                      "members": listed, **(manifest or {})}))
    return path


def refused(tmp_path, bundle, *words: str, limits: Limits | None = None) -> GptsError:
    """Import `bundle` into tmp_path/out, expecting a refusal whose message holds `words`, and nothing written."""
    before = everything(tmp_path)
    with pytest.raises(GptsError) as e:
        read_bundle(bundle, tmp_path / "out", limits or Limits())
    assert not (tmp_path / "out").exists() and everything(tmp_path) == before
    for word in words:
        assert word in str(e.value)
    assert str(bundle) in e.value.problem and e.value.fix
    return e.value


def info(name: str, mode: int) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name)
    member.create_system = 3
    member.external_attr = mode << 16
    return member


# -- round trip -------------------------------------------------------------------------------------------------


def test_a_bundle_imports_as_it_was_exported(tmp_path):
    members = knowledge(tmp_path)
    bundle = write_bundle(tmp_path / "helper.gpt", SPEC, members)
    assert bundle == tmp_path / "helper.gpt"

    spec, files = read_bundle(bundle, tmp_path / "imported" / "helper")
    assert spec == SPEC
    assert files.keys() == members.keys()
    for name, source in members.items():
        assert files[name] == tmp_path / "imported" / "helper" / name
        assert files[name].read_bytes() == source.read_bytes()
    assert everything(tmp_path / "imported" / "helper") == {"spec.json", "knowledge", "knowledge/handbook.md",
                                                           "knowledge/sub", "knowledge/sub/empty.txt", "adapter",
                                                           "adapter/adapter_model.safetensors"}
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        spec_bytes = archive.read("spec.json")
        assert {i.filename: i.compress_type for i in archive.infolist()} == dict.fromkeys(
            ["spec.json", *members, "manifest.json"], zipfile.ZIP_DEFLATED)
        assert all(i.external_attr >> 16 == 0o100644 for i in archive.infolist())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION and manifest["spec"] == "spec.json"
    assert manifest["members"]["adapter/adapter_model.safetensors"] == {
        "sha256": hashlib.sha256(members["adapter/adapter_model.safetensors"].read_bytes()).hexdigest(),
        "size": 3 * 512 * 1024}
    assert json.loads(spec_bytes) == SPEC
    assert manifest["members"]["spec.json"] == {"sha256": hashlib.sha256(spec_bytes).hexdigest(),
                                                "size": len(spec_bytes)}


def test_folder_entries_from_other_zip_tools_are_accepted(tmp_path):
    bundle = crafted(tmp_path, [(info("knowledge/", 0o40755), b""), ("knowledge/a.md", b"a")])
    spec, files = read_bundle(bundle, tmp_path / "out")
    assert spec == SPEC and files == {"knowledge/a.md": tmp_path / "out" / "knowledge" / "a.md"}


def test_the_bundle_module_imports_without_torch_or_numpy():
    code = "import sys; sys.modules['torch'] = sys.modules['numpy'] = None; import gpts.store.archive"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- writing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names, words", [
    (["../evil"], "'..' component"),
    (["/etc/x"], "absolute path"),
    (["a\\b.md"], "backslash"),
    (["manifest.json"], "the bundle's own"),
    (["Spec.json"], "the bundle's own"),
    (["knowledge/A.md", "knowledge/a.md"], "differ only in case"),
    (["knowledge", "knowledge/a.md"], "is a file"),
])
def test_names_import_would_refuse_are_refused_on_export(tmp_path, names, words):
    source = tmp_path / "a.md"
    source.write_text("a")
    with pytest.raises(GptsError) as e:
        write_bundle(tmp_path / "x.gpt", SPEC, dict.fromkeys(names, source))
    assert words in e.value.problem and str(tmp_path / "x.gpt") in e.value.problem
    assert everything(tmp_path) == {"a.md"}


def test_a_failed_export_leaves_the_old_bundle(tmp_path):
    members = knowledge(tmp_path)
    bundle = write_bundle(tmp_path / "helper.gpt", SPEC, members)
    before = bundle.read_bytes()
    with pytest.raises(GptsError, match="No such file"):
        write_bundle(bundle, {"name": "new"}, {**members, "knowledge/gone.md": tmp_path / "gone.md"})
    assert bundle.read_bytes() == before and {p.name for p in tmp_path.iterdir()} == {"in", "helper.gpt"}


def test_an_export_too_many_files_to_import_is_refused(tmp_path):
    with pytest.raises(GptsError, match="more than a bundle may hold"):
        write_bundle(tmp_path / "x.gpt", SPEC, {f"knowledge/{i}.md": tmp_path / "none" for i in range(999)})
    assert not (tmp_path / "x.gpt").exists()


# -- hostile archives -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, words", [
    ("../evil", "'..' component"),
    ("a/../../evil", "'..' component"),
    ("/etc/x", "absolute path"),
    ("C:\\x", "absolute path"),
    ("C:x", "absolute path"),
    ("\\\\server\\share\\x", "absolute path"),
    ("docs\\..\\..\\evil", "backslash"),
    ("knowledge//a.md", "empty or '.' component"),
    ("knowledge/./a.md", "empty or '.' component"),
    ("knowledge/a\n.md", "control character"),
])
def test_unsafe_names_are_refused(tmp_path, name, words):
    refused(tmp_path, crafted(tmp_path, [(name, b"pwned")]), repr(name), words)


@pytest.mark.parametrize("mode, words", [
    (0o120777, "symbolic link"),
    (0o010644, "FIFO"),
    (0o020644, "character device"),
    (0o060644, "block device"),
    (0o140644, "socket"),
    (0o040755, "marked as a folder"),
])
def test_members_that_are_not_plain_files_are_refused(tmp_path, mode, words):
    refused(tmp_path, crafted(tmp_path, [(info("knowledge/link", mode), b"/etc/passwd")]), words)


@pytest.mark.parametrize("names, words", [
    (["knowledge/a.md", "knowledge/a.md"], "appears twice"),
    (["spec.json"], "appears twice"),  # a second spec.json: which one the manifest's sha256 covers is a guess
    (["knowledge/Notes.md", "knowledge/notes.md"], "differ only in case"),
    ([unicodedata.normalize("NFC", "café.md"), unicodedata.normalize("NFD", "café.md")], "differ only in case"),
    (["knowledge", "knowledge/a.md"], "is a file"),
])
def test_names_that_collide_are_refused(tmp_path, names, words):
    refused(tmp_path, crafted(tmp_path, [(name, name.encode()) for name in names]), words)


def test_a_member_the_manifest_does_not_list_is_refused(tmp_path):
    bundle = crafted(tmp_path, [("knowledge/a.md", b"a"), ("knowledge/extra.md", b"b")],
                     unlisted=("knowledge/extra.md",))
    refused(tmp_path, bundle, "'knowledge/extra.md' is not listed in manifest.json")


def test_a_manifest_entry_missing_from_the_archive_is_refused(tmp_path):
    bundle = crafted(tmp_path, [], declared={"knowledge/gone.md": {"sha256": "0" * 64, "size": 1}})
    refused(tmp_path, bundle, "'knowledge/gone.md'", "missing from the archive")


def test_a_bad_checksum_is_refused_and_the_folders_made_for_it_removed(tmp_path):
    bundle = crafted(tmp_path, [(name, source.read_bytes()) for name, source in knowledge(tmp_path).items()],
                     declared={"adapter/adapter_model.safetensors": {"sha256": "f" * 64}})
    before = everything(tmp_path)
    with pytest.raises(GptsError) as e:
        read_bundle(bundle, tmp_path / "new" / "folders" / "out")
    assert "'adapter/adapter_model.safetensors' does not match its sha256" in e.value.problem
    assert everything(tmp_path) == before


def test_a_member_whose_size_differs_from_the_manifest_is_refused(tmp_path):
    bundle = crafted(tmp_path, [("knowledge/a.md", b"abc")], declared={"knowledge/a.md": {"size": 2}})
    refused(tmp_path, bundle, "'knowledge/a.md' is 3 bytes, but manifest.json says 2")


def test_a_zip_bomb_member_is_refused_before_it_unpacks(tmp_path):
    bomb = zipfile.ZipInfo("knowledge/zeros.bin")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    refused(tmp_path, crafted(tmp_path, [(bomb, bytes(8 * 1024 * 1024))]), "'knowledge/zeros.bin' unpacks to",
            "zip bomb")


def test_a_bomb_spread_over_small_members_is_refused(tmp_path):
    bundle = crafted(tmp_path, [(f"knowledge/{i}.bin", bytes(512 * 1024)) for i in range(12)])
    refused(tmp_path, bundle, "it unpacks to", "times its size", "zip bomb")


def test_too_many_members_are_refused(tmp_path):
    bundle = crafted(tmp_path, [(f"knowledge/{i}.md", b"x") for i in range(3)])
    refused(tmp_path, bundle, "holds 5 members, more than the 4 allowed", limits=Limits(max_members=4))
    assert read_bundle(bundle, tmp_path / "out", Limits(max_members=5))[0] == SPEC


def test_more_unpacked_bytes_than_allowed_are_refused(tmp_path):
    bundle = crafted(tmp_path, [("knowledge/a.md", os.urandom(5000))])
    refused(tmp_path, bundle, "more than the 4,000 allowed", limits=Limits(max_total_bytes=4000))


def test_a_member_that_unpacks_past_its_declared_size_is_stopped(tmp_path, monkeypatch):
    class Endless(io.RawIOBase):
        """What a member whose header understates its size unpacks to: more bytes than declared, without end."""

        served = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            Endless.served += len(buffer)
            assert Endless.served < 64 * 1024 * 1024, "the declared size did not stop the unpacking"
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    real_open = zipfile.ZipFile.open

    def open_member(self, name, *args, **kwargs):
        if getattr(name, "filename", name) == "knowledge/a.md":
            return Endless()
        return real_open(self, name, *args, **kwargs)

    bundle = crafted(tmp_path, [("knowledge/a.md", b"abc")])
    monkeypatch.setattr(zipfile.ZipFile, "open", open_member)
    refused(tmp_path, bundle, "'knowledge/a.md' unpacks to more than the 3 bytes it declares")
    assert Endless.served <= 2 * 1024 * 1024


def test_a_header_that_understates_its_member_is_refused(tmp_path):
    """zipfile unpacks no more than the central directory declares; the shortened member then fails its CRC."""
    bundle = crafted(tmp_path, [("knowledge/a.md", b"A" * 1000)],
                     declared={"knowledge/a.md": {"sha256": hashlib.sha256(b"A" * 10).hexdigest(), "size": 10}})
    raw = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as archive:
        local = archive.getinfo("knowledge/a.md").header_offset
    struct.pack_into("<I", raw, local + 22, 10)  # the local header's uncompressed size
    central = raw.rindex(b"knowledge/a.md") - 46  # the last mention is the central directory's entry
    struct.pack_into("<I", raw, central + 24, 10)  # and its uncompressed size
    bundle.write_bytes(raw)
    refused(tmp_path, bundle, "is damaged", "CRC")

def test_a_name_that_zipfile_would_cut_short_is_refused(tmp_path):
    """zipfile ends a name at a NUL byte; other unzip tools may not, and would write another file."""
    bundle = crafted(tmp_path, [("knowledge/a.md\x01.exe", b"a")], unlisted=("knowledge/a.md\x01.exe",),
                     declared={"knowledge/a.md": {"sha256": hashlib.sha256(b"a").hexdigest(), "size": 1}})
    bundle.write_bytes(bundle.read_bytes().replace(b"a.md\x01.exe", b"a.md\x00.exe"))
    refused(tmp_path, bundle, "'knowledge/a.md\\x00.exe' has a name that changes on unpacking")



# -- damaged and foreign files ----------------------------------------------------------------------------------


def test_a_truncated_bundle_is_damaged(tmp_path):
    bundle = write_bundle(tmp_path / "in" / "helper.gpt", SPEC, knowledge(tmp_path))
    bundle.write_bytes(bundle.read_bytes()[:-100])
    refused(tmp_path, bundle, "is damaged or truncated")


def test_a_corrupt_member_is_damaged(tmp_path):
    bundle = write_bundle(tmp_path / "in" / "helper.gpt", SPEC, knowledge(tmp_path))
    with zipfile.ZipFile(bundle) as archive:
        member = archive.getinfo("adapter/adapter_model.safetensors")
    raw = bytearray(bundle.read_bytes())
    raw[member.header_offset + 30 + len(member.filename) + member.compress_size // 2] ^= 0xFF
    bundle.write_bytes(raw)
    refused(tmp_path, bundle, "is damaged")


def test_a_file_that_is_not_a_zip_is_not_a_bundle(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.gpt").write_text("just some notes\n")
    refused(tmp_path, tmp_path / "in" / "notes.gpt", "is not a .gpt bundle (it is not a zip archive)")


def test_a_zip_without_a_manifest_is_not_a_bundle(tmp_path):
    (tmp_path / "in").mkdir()
    with zipfile.ZipFile(tmp_path / "in" / "photos.gpt", "w") as archive:
        archive.writestr("cat.jpg", b"meow")
    refused(tmp_path, tmp_path / "in" / "photos.gpt", "is not a .gpt bundle: it has no manifest.json")


def test_a_bundle_from_a_newer_gpts_says_to_upgrade(tmp_path):
    error = refused(tmp_path, crafted(tmp_path, [], manifest={"version": VERSION + 1}), "made by a newer gpts")
    assert "Upgrade gpts" in error.fix


@pytest.mark.parametrize("manifest, words", [
    ({"format": "other"}, "is not a gpts-bundle manifest"),
    ({"version": "1"}, "has version '1'"),
    ({"members": ["spec.json"]}, 'no "members" object'),
    ({"spec": "other.json"}, "names 'other.json' as the spec"),
    ({"members": {}}, "names 'spec.json' as the spec; a version 1 bundle keeps it in spec.json, and lists it"),
])
def test_a_malformed_manifest_is_refused(tmp_path, manifest, words):
    refused(tmp_path, crafted(tmp_path, [], manifest=manifest), words)


def test_a_malformed_manifest_entry_is_refused(tmp_path):
    bundle = crafted(tmp_path, [("knowledge/a.md", b"a")], declared={"spec.json": {"sha256": "abc"}})
    refused(tmp_path, bundle, "entry 'spec.json' is not")


def test_an_existing_destination_is_left_alone(tmp_path):
    bundle = write_bundle(tmp_path / "in" / "helper.gpt", SPEC, knowledge(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(GptsError, match="already exists"):
        read_bundle(bundle, tmp_path / "out")
    assert everything(tmp_path / "out") == {"mine.txt"}

