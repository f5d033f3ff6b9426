"""The store: a real SQLite file in a temporary GPTS_HOME, a tiny model's tokenizer to cut knowledge files."""

import hashlib
import multiprocessing
import sqlite3
import zipfile
from pathlib import Path

import pytest

from gpts import store
from gpts.errors import GptsError
from gpts.spec import parse_spec
from gpts.store.db import MIGRATIONS, connect, database_path
from helpers import Recorder, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def handbook(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "handbook.md").write_text(
        "# Handbook\n\nEvery employee gets 27 days of paid leave a year.\n\n"
        "The office cat is named Biscuit Thunderpaw.\n\nDogs are welcome on Fridays.\n")
    (folder / "travel.txt").write_text("Trains are booked through the travel desk.\nFlights need approval.\n")
    return folder


def spec(model_dir, **fields):
    return parse_spec({"name": "HR helper", "model": str(model_dir), **fields})


def snapshot(home: Path) -> dict[str, str]:
    """Every file under the user directory and its content hash (the database's by its rows, since SQLite may move
    committed pages from its log into the file at any time): what "nothing was written" compares."""
    def content(path: Path) -> bytes:
        if path.suffix != ".db":
            return path.read_bytes()
        conn = sqlite3.connect(path)
        try:
            return "\n".join(conn.iterdump()).encode()
        finally:
            conn.close()

    return {str(p.relative_to(home)): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def table_counts() -> dict[str, int]:
    conn = connect()
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("gpts", "versions", "files", "chunks", "version_files", "ratings", "conversations")}


# -- the database --------------------------------------------------------------------------------------------------


def test_migrations_build_the_schema_from_an_empty_file(tmp_path):
    path = tmp_path / "gpts.db"
    path.touch()
    conn = connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"gpts", "versions", "files", "chunks", "chunks_fts", "ratings", "conversations", "messages"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    connect(path)  # a second open migrates nothing and fails on nothing


def test_a_database_from_a_newer_gpts_is_refused_unchanged(tmp_path):
    path = tmp_path / "gpts.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    before = path.read_bytes()
    with pytest.raises(GptsError, match="newer gpts") as e:
        connect(path)
    assert "Upgrade gpts" in e.value.fix
    assert path.read_bytes() == before


def test_a_corrupt_database_is_a_clear_error_and_stays_as_it_was(tmp_path):
    path = tmp_path / "gpts.db"
    path.write_bytes(b"this is not an SQLite database, just bytes " * 100)
    before = path.read_bytes()
    with pytest.raises(GptsError, match="cannot be read") as e:
        connect(path)
    assert "Move it aside" in e.value.fix
    assert path.read_bytes() == before


# -- GPTs and versions ---------------------------------------------------------------------------------------------


def test_create_stores_the_spec_and_cuts_the_knowledge(model_dir, handbook):
    report = Recorder()
    gpt = store.create_gpt(spec(model_dir, knowledge=["kb"], retrieval={"chunk_tokens": 32, "overlap_tokens": 8}),
                           handbook.parent, report)
    assert (gpt.slug, gpt.version) == ("hr-helper", 1)
    assert sorted(f.name for f in gpt.knowledge) == ["kb/handbook.md", "kb/travel.txt"]
    assert all(f.chunks >= 1 for f in gpt.knowledge)
    assert gpt.spec.knowledge == ["kb/handbook.md", "kb/travel.txt"]  # stored names, not the paths on disk
    assert any("chunks" in m for m in report.messages())
    (handbook / "handbook.md").unlink()  # the store keeps its own copy
    found = store.retrieve(connect(), gpt.id, 1, "What is the office cat called?", 2)
    assert found[0].file == "kb/handbook.md" and "Biscuit" in found[0].text


def test_unchanged_files_are_stored_once_and_not_cut_again(model_dir, handbook):
    store.create_gpt(spec(model_dir, knowledge=["kb/handbook.md"]), handbook.parent)
    store.create_gpt(spec(model_dir, name="Other", knowledge=["kb/handbook.md"]), handbook.parent)
    counts = table_counts()
    assert counts["files"] == 1
    assert connect().execute("SELECT count(*) FROM chunk_sets").fetchone()[0] == 1
    assert len(list((Path(store.database_path()).parent / "files").rglob("*"))) == 2  # one folder, one copy


def test_edit_makes_versions_and_restore_brings_one_back(model_dir, handbook, monkeypatch):
    monkeypatch.chdir(handbook)
    store.create_gpt(spec(model_dir, instructions="Be brief.", knowledge=["handbook.md"]), handbook)
    v2 = store.edit_gpt("hr-helper", {"instructions": "Be thorough."}, add_knowledge=["travel.txt"])
    assert (v2.version, v2.spec.instructions) == (2, "Be thorough.")
    assert [f.name for f in v2.knowledge] == ["handbook.md", "travel.txt"]
    v3 = store.edit_gpt("hr-helper", remove_knowledge=["handbook.md"], note="no handbook")
    assert [f.name for f in v3.knowledge] == ["travel.txt"]
    assert [v.number for v in store.gpt_versions("hr-helper")] == [1, 2, 3]
    v4 = store.restore_gpt("hr-helper", 1)
    assert v4.version == 4 and v4.spec.instructions == "Be brief." and [f.name for f in v4.knowledge] == ["handbook.md"]
    assert store.get_gpt("hr-helper", 2).spec.instructions == "Be thorough."  # old versions stay as they were
    assert store.gpt_versions("hr-helper")[-1].note == "restored version 1"
    with pytest.raises(GptsError, match="Nothing to change"):
        store.edit_gpt("hr-helper", {"instructions": "Be brief."})
    with pytest.raises(GptsError, match="no version 9"):
        store.get_gpt("hr-helper", 9)


def test_search_ranks_name_matches_first(model_dir):
    store.create_gpt(spec(model_dir, name="Recipe helper", description="Cooking ideas."))
    store.create_gpt(spec(model_dir, name="Kitchen planner", description="Plans meals around a recipe you like.",
                          tags=["food"]))
    store.create_gpt(spec(model_dir, name="Tax helper", instructions="Explain taxes."))
    found = [g.slug for g in store.search_gpts("recipe")]
    assert found == ["recipe-helper", "kitchen-planner"]
    assert [g.slug for g in store.search_gpts("food")] == ["kitchen-planner"]
    assert [g.slug for g in store.search_gpts("taxes")] == ["tax-helper"]
    assert [g.slug for g in store.search_gpts("reci")] == found  # a word still being typed matches those it starts
    assert store.search_gpts("reci ") == []  # a finished word matches only itself
    assert store.search_gpts("recipe", category="writing") == []
    with pytest.raises(GptsError, match="no words"):
        store.search_gpts("  ?? ")


def test_search_and_retrieval_work_in_chinese(model_dir, tmp_path):
    (tmp_path / "手册.md").write_text("# 员工手册\n\n每位员工每年有二十七天带薪假期。\n\n办公室的猫名叫饼干雷爪。\n\n"
                                     "只有星期五可以带狗来办公室。\n")
    gpt = store.create_gpt(spec(model_dir, name="人事助手", description="回答员工手册的问题。", knowledge=["手册.md"],
                                retrieval={"chunk_tokens": 64, "overlap_tokens": 0}), tmp_path)
    assert [g.slug for g in store.search_gpts("员工手册")] == [gpt.slug]
    found = store.retrieve(connect(), gpt.id, 1, "办公室的猫叫什么名字？", 1)
    assert "饼干雷爪" in found[0].text
    found = store.retrieve(connect(), gpt.id, 1, "每年有多少天带薪假期？", 1)
    assert "二十七天" in found[0].text


def test_list_sorts_and_filters(model_dir):
    store.create_gpt(spec(model_dir, name="A", category="writing"))
    store.create_gpt(spec(model_dir, name="B", category="research"))
    store.rate_gpt("b", 5, user="ada")
    store.record_evaluation("a", 1, "accuracy", 0.9, {})
    assert [g.slug for g in store.list_gpts(sort="rating")] == ["b", "a"]
    assert [g.slug for g in store.list_gpts(sort="score")] == ["a", "b"]
    assert [g.slug for g in store.list_gpts(category="writing")] == ["a"]
    with pytest.raises(GptsError, match="Unknown category"):
        store.list_gpts(category="games")


def test_ratings_one_per_user_replaced_on_rerating(model_dir):
    store.create_gpt(spec(model_dir))
    store.rate_gpt("hr-helper", 2, user="ada")
    store.rate_gpt("hr-helper", 4, "better now", user="ada")
    rating = store.rate_gpt("hr-helper", 5, user="grace")
    assert (rating.average, rating.count) == (4.5, 2)
    for stars in (0, 6, 2.5, True):
        with pytest.raises(GptsError, match="Rate from 1 to 5"):
            store.rate_gpt("hr-helper", stars, user="ada")
    assert [g.slug for g, n in store.trending_gpts()] == ["hr-helper"]


def test_remove_deletes_versions_and_unused_copies_but_keeps_conversations(model_dir, handbook):
    gpt = store.create_gpt(spec(model_dir, knowledge=["kb/handbook.md"]), handbook.parent)
    conversation = store.start_conversation(gpt, "hello")
    store.add_turn(conversation, "hello", "hi", 1, [], {"prompt_tokens": 3, "completion_tokens": 1})
    store.remove_gpt("hr-helper")
    assert table_counts()["files"] == 0 and table_counts()["chunks"] == 0
    assert not list((database_path().parent / "files").rglob("*.md"))
    assert not [p for p in (database_path().parent / "files").rglob("*") if p.is_file()]
    assert store.get_conversation(conversation).slug == "hr-helper"
    with pytest.raises(GptsError, match="No GPT named 'hr-helper'"):
        store.get_gpt("hr-helper")


def test_conversations_keep_messages_and_the_version_that_answered(model_dir):
    gpt = store.create_gpt(spec(model_dir))
    conversation = store.start_conversation(gpt)
    assert store.get_conversation(conversation).title == ""  # until its first question names it
    store.add_turn(conversation, "What is the leave policy? " * 5, "27 days.", 1,
                   [{"file": "handbook.md", "chunk": 0, "lines": [3, 3], "quote": "27 days"}], {"prompt_tokens": 9})
    store.edit_gpt("hr-helper", {"instructions": "Be brief."})
    store.add_turn(conversation, "And dogs?", "Fridays.")  # no version given: the GPT's current one
    thread = store.get_conversation(conversation)
    assert [(m["role"], m.get("version")) for m in thread.messages] == [
        ("user", None), ("assistant", 1), ("user", None), ("assistant", 2)]
    assert thread.messages[1]["citations"][0]["file"] == "handbook.md"
    assert thread.title.startswith("What is the leave policy?") and len(thread.title) == 60
    assert store.get_gpt("hr-helper").conversations == 1
    assert [t.id for t in store.list_conversations("hr-helper")] == [conversation]
    assert store.list_conversations("someone-else") == []
    store.remove_conversation(conversation)
    with pytest.raises(GptsError, match="No conversation"):
        store.get_conversation(conversation)


def test_a_conversation_with_a_model_is_renamed_and_rewound():
    conversation = store.start_conversation("tiny", "  Tests  ")
    for i in range(3):
        store.add_turn(conversation, f"question {i}", f"answer {i}")
    thread = store.get_conversation(conversation)
    assert (thread.slug, thread.title, thread.turns) == ("tiny", "Tests", 3)
    assert {m.get("version") for m in thread.messages if m["role"] == "assistant"} == {None}  # no GPT answered

    store.add_turn(conversation, "question 2", "another answer 2", keep=2)  # regenerated
    store.add_turn(conversation, "question 1, edited", "answer 1 again", keep=1)  # an edited question
    thread = store.get_conversation(conversation)
    assert [m["content"] for m in thread.messages] == ["question 0", "answer 0", "question 1, edited",
                                                       "answer 1 again"]
    with pytest.raises(GptsError, match="Cannot keep 3 turns .* it has 2"):
        store.add_turn(conversation, "question", "answer", keep=3)
    assert store.get_conversation(conversation).turns == 2  # the refused turn wrote nothing

    store.rename_conversation(conversation, "Renamed")
    assert store.get_conversation(conversation).title == "Renamed"
    assert [t.id for t in store.list_conversations("tiny")] == [conversation]
    for missing in (lambda: store.rename_conversation("nope", "x"), lambda: store.add_turn("nope", "q", "a")):
        with pytest.raises(GptsError, match="No conversation 'nope'"):
            missing()


# -- bad input: a clear error, and nothing written -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["duplicate", "too_many", "unsupported", "empty", "missing_model", "missing_file",
                                  "oversized", "no_text"])
def test_bad_input_writes_nothing(model_dir, tmp_path, gpts_home, case):
    store.create_gpt(spec(model_dir, name="Taken"))
    for i in range(3):
        (tmp_path / f"f{i}.md").write_text(f"file {i}\n")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "image.png").write_bytes(b"\x89PNG....")
    (tmp_path / "big.md").write_text("word " * 50_000)
    (tmp_path / "blank.md").write_text("   \n\n  \n")
    bad = {
        "duplicate": (spec(model_dir, name="Taken"), "exists already"),
        "too_many": (spec(model_dir, knowledge=["f0.md", "f1.md", "f2.md"], retrieval={"max_files": 2}),
                     "at most 2"),
        "unsupported": (spec(model_dir, knowledge=["f0.md", "image.png"]), "image.png"),
        "empty": (spec(model_dir, knowledge=["f0.md", "empty.md"]), "empty.md"),
        "missing_model": (spec(tmp_path / "no-such-model"), "no-such-model"),
        "missing_file": (spec(model_dir, knowledge=["nothing.md"]), "nothing.md"),
        "oversized": (spec(model_dir, knowledge=["f0.md", "big.md"], retrieval={"max_file_mb": 0.1}), "big.md"),
        "no_text": (spec(model_dir, knowledge=["f0.md", "f1.md", "blank.md"]), "blank.md"),  # read after the others
    }[case]
    before, counts = snapshot(gpts_home), table_counts()
    with pytest.raises(GptsError, match=bad[1]):
        store.create_gpt(bad[0], tmp_path)
    assert table_counts() == counts
    assert snapshot(gpts_home) == before


def test_unknown_slug_everywhere(model_dir):
    for call in (lambda: store.get_gpt("nope"), lambda: store.edit_gpt("nope", {"instructions": "x"}),
                 lambda: store.rate_gpt("nope", 3), lambda: store.remove_gpt("nope"),
                 lambda: store.restore_gpt("nope", 1), lambda: store.gpt_versions("nope"),
                 lambda: store.export_gpt("nope")):
        with pytest.raises(GptsError, match="No GPT named 'nope'"):
            call()


# -- concurrent writers --------------------------------------------------------------------------------------------


def _writer(home: str, model_dir: str, worker: int, n: int) -> None:
    import os

    os.environ["GPTS_HOME"] = home
    from gpts import store
    from gpts.spec import parse_spec

    for i in range(n):
        slug = f"w{worker}-{i}"
        store.create_gpt(parse_spec({"name": slug, "model": model_dir}))
        store.rate_gpt(slug, 1 + i % 5, user=f"user{worker}")
        store.rate_gpt("shared", 1 + (i + worker) % 5, user=f"user{worker}-{i}")
        store.edit_gpt(slug, {"instructions": f"version two of {slug}"})


def test_two_processes_write_at_once_and_every_write_lands(model_dir, gpts_home):
    store.create_gpt(parse_spec({"name": "shared", "model": str(model_dir)}))
    context = multiprocessing.get_context("spawn")
    n = 15
    workers = [context.Process(target=_writer, args=(str(gpts_home), str(model_dir), w, n)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    gpts = {g.slug: g for g in store.list_gpts()}
    assert len(gpts) == 1 + 2 * n
    assert all(g.version == 2 for slug, g in gpts.items() if slug != "shared")
    assert gpts["shared"].ratings == 2 * n


# -- bundles -------------------------------------------------------------------------------------------------------


def test_export_then_import_gives_an_equal_gpt(model_dir, handbook, tmp_path):
    original = store.create_gpt(spec(model_dir, instructions="Answer from the handbook.", knowledge=["kb"],
                                     examples=[[{"role": "user", "content": "Hi"}, {"role": "assistant",
                                                                                    "content": "Hello!"}]],
                                     conversation_starters=["How much leave?"], tags=["hr"]), handbook.parent)
    bundle = store.export_gpt("hr-helper", tmp_path / "hr.gpt")
    with zipfile.ZipFile(bundle) as z:
        assert {"manifest.json", "spec.json", "knowledge/kb/handbook.md", "knowledge/kb/travel.txt"} <= set(z.namelist())
    copy = store.import_gpt(bundle, "hr-copy")
    assert copy.spec.model_copy(update={"slug": "hr-helper"}) == original.spec
    assert [(f.name, f.sha256) for f in copy.files] == [(f.name, f.sha256) for f in original.files]
    assert store.retrieve(connect(), copy.id, 1, "office cat", 1)[0].file == "kb/handbook.md"
    with pytest.raises(GptsError, match="exists already"):
        store.import_gpt(bundle)


def test_a_bundle_with_a_bad_checksum_or_damage_changes_nothing(model_dir, handbook, tmp_path, gpts_home):
    store.create_gpt(spec(model_dir, knowledge=["kb/handbook.md"]), handbook.parent)
    bundle = store.export_gpt("hr-helper", tmp_path / "hr.gpt")
    tampered = tmp_path / "tampered.gpt"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data.replace(b"27 days", b"99 days") if item.filename.endswith(".md") else data)
    damaged = tmp_path / "damaged.gpt"
    damaged.write_bytes(bundle.read_bytes()[:-200])
    before, counts = snapshot(gpts_home), table_counts()
    with pytest.raises(GptsError, match="sha256|checksum"):
        store.import_gpt(tampered, "other")
    with pytest.raises(GptsError, match="damaged|not a .gpt"):
        store.import_gpt(damaged, "other")
    assert table_counts() == counts and snapshot(gpts_home) == before


def _hostile(path: Path, name: str, data: bytes = b"x", mode: int = 0o100644) -> Path:
    """A bundle whose manifest lists a member `name` with the right checksum: only the name or the type is wrong."""
    import json

    spec = json.dumps({"name": "Hostile"}).encode()
    members = {"spec.json": spec, name: data}
    manifest = {"format": "gpts-bundle", "version": 1, "spec": "spec.json",
                "members": {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for n, d in members.items():
            info = zipfile.ZipInfo(n)
            info.external_attr = mode << 16
            z.writestr(info, d)
    return path


@pytest.mark.parametrize("name, mode, message", [
    ("../evil.md", 0o100644, ".."),
    ("knowledge/../../evil.md", 0o100644, ".."),
    ("/etc/evil.md", 0o100644, "absolute"),
    ("knowledge/link.md", 0o120777, "link"),
])
def test_a_hostile_bundle_is_refused_and_nothing_is_written(tmp_path, gpts_home, name, mode, message):
    connect()
    before = snapshot(gpts_home)
    with pytest.raises(GptsError, match=message):
        store.import_gpt(_hostile(tmp_path / "hostile.gpt", name, mode=mode))
    assert snapshot(gpts_home) == before and table_counts()["gpts"] == 0
    assert not (tmp_path.parent / "evil.md").exists() and not Path("/etc/evil.md").exists()


def test_the_same_content_twice_is_stored_and_cut_once(model_dir, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text("The same words in two places.\n")
    gpt = store.create_gpt(spec(model_dir, knowledge=["a", "b"]), tmp_path)
    assert [f.name for f in gpt.knowledge] == ["a/README.md", "b/README.md"]
    assert table_counts()["files"] == 1
    assert connect().execute("SELECT count(*) FROM chunk_sets").fetchone()[0] == 1


def test_a_folder_given_as_dot_dot_is_named_by_its_own_name(model_dir, tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("A note.\n")
    (tmp_path / "notes" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "notes" / "sub")
    gpt = store.create_gpt(spec(model_dir, knowledge=[".."]), Path.cwd())
    assert [f.name for f in gpt.knowledge] == ["notes/a.md"]
    store.export_gpt(gpt.slug, tmp_path / "notes.gpt")  # a name that a bundle can hold


def test_version_zero_is_no_version(model_dir):
    store.create_gpt(spec(model_dir))
    for call in (lambda: store.get_gpt("hr-helper", 0), lambda: store.restore_gpt("hr-helper", 0)):
        with pytest.raises(GptsError, match="no version 0"):
            call()
    assert store.get_gpt("hr-helper").version == 1 and len(store.gpt_versions("hr-helper")) == 1


def test_export_never_replaces_a_folder_or_another_file(model_dir, tmp_path):
    store.create_gpt(spec(model_dir))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine too")
    for target in ("folder", "notes.txt"):
        with pytest.raises(GptsError, match="not a .gpt bundle"):
            store.export_gpt("hr-helper", tmp_path / target)
    assert (tmp_path / "folder" / "keep.txt").read_text() == "mine" and (tmp_path / "notes.txt").read_text() == "mine too"
    store.export_gpt("hr-helper", tmp_path / "hr.gpt")
    store.export_gpt("hr-helper", tmp_path / "hr.gpt")  # an older export is replaced


def test_an_edit_that_lost_a_race_is_refused_not_merged(model_dir, monkeypatch):
    from gpts.store import catalogue

    store.create_gpt(spec(model_dir, instructions="One."))
    build = catalogue._build

    def another_edit_lands_meanwhile(*args, **kwargs):
        monkeypatch.setattr(catalogue, "_build", build)
        store.edit_gpt("hr-helper", {"instructions": "Two."}, conn=connect())
        return build(*args, **kwargs)

    monkeypatch.setattr(catalogue, "_build", another_edit_lands_meanwhile)
    with pytest.raises(GptsError, match="changed while this edit was being made"):
        store.edit_gpt("hr-helper", {"description": "Three."})
    gpt = store.get_gpt("hr-helper")
    assert (gpt.version, gpt.spec.instructions, gpt.spec.description) == (2, "Two.", "")


def test_a_failed_write_takes_its_new_copies_with_it(model_dir, handbook, gpts_home, monkeypatch):
    from gpts.store import catalogue

    store.create_gpt(spec(model_dir, name="Taken"))
    free = catalogue.check_free
    calls = []

    def taken_meanwhile(conn, slug):  # free when checked first, taken by another process when written
        calls.append(slug)
        if len(calls) > 1:
            free(conn, "taken")
        free(conn, slug)

    monkeypatch.setattr(catalogue, "check_free", taken_meanwhile)
    before = snapshot(gpts_home)
    with pytest.raises(GptsError, match="exists already"):
        store.create_gpt(spec(model_dir, knowledge=["kb"]), handbook.parent)
    assert snapshot(gpts_home) == before
