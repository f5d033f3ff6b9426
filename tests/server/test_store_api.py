"""The store and conversations over HTTP (gpts.server.routes.store) on a real uvicorn server on a loopback port, and
`gpts import URL` from one server's store into another GPTS_HOME through the real CLI."""

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from contextlib import closing
from pathlib import Path

import httpx2 as httpx
import pytest

from gpts import store
from gpts.errors import GptsError
from gpts.server.app import ServerSettings, create_app
from gpts.store.bundles import import_gpt_url
from gpts.store.db import connect
from helpers import run

HANDBOOK = b"# Handbook\n\nEvery employee gets 27 days of paid leave a year.\n\nThe office cat is named Biscuit.\n"


@pytest.fixture
def start(serve, tiny_model_path):
    """start(**settings) -> the base URL of a new server (of a tiny model, which loads in a moment) on this test's
    store."""
    return lambda **settings: serve(create_app(ServerSettings(models=[str(tiny_model_path)], **settings)))


@pytest.fixture(autouse=True)
def no_temporary_files(gpts_home):
    """Set up before the servers, checked after they stop: no upload or export leaves its temporary files behind."""
    yield
    assert not list((gpts_home / "store").glob(".*-*")), "temporary files left in the store"


@pytest.fixture
def base_url(start):
    return start()


@pytest.fixture
def api(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


@pytest.fixture
def hr(tiny_model_path):
    """A spec as a client sends it; the tiny model's tokenizer cuts its knowledge files."""
    return {"name": "Larkspur HR helper", "slug": "larkspur-hr", "description": "Answers from the employee handbook.",
            "instructions": "You answer questions from the handbook.", "model": str(tiny_model_path),
            "category": "productivity", "tags": ["hr", "handbook"],
            "retrieval": {"chunk_tokens": 64, "overlap_tokens": 16, "top_k": 2}}


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status: int, says: str, param: str | None = None) -> dict:
    """An OpenAI-shaped error with this status, saying `says`, naming `param`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"}
    return error


def ids(listed: dict) -> list[str]:
    assert listed["object"] == "list"
    return [item["id"] for item in listed["data"]]


def knowledge(*files: tuple[str, bytes]) -> list:
    return [("file", (name, data, "application/octet-stream")) for name, data in files]


def test_the_life_of_a_gpt(api, hr):
    created = ok(api.post("/v1/gpts", json=hr))
    assert (created["object"], created["id"], created["version"]) == ("gpt", "larkspur-hr", 1)
    assert created == {"object": "gpt", "id": "larkspur-hr", **store.get_gpt("larkspur-hr").to_dict()}

    assert ids(ok(api.get("/v1/gpts"))) == ["larkspur-hr"]
    assert ids(ok(api.get("/v1/gpts", params={"category": "writing"}))) == []
    assert ids(ok(api.get("/v1/gpts", params={"sort": "rating", "category": "productivity"}))) == ["larkspur-hr"]
    assert ids(ok(api.get("/v1/gpts", params={"q": "handbook"}))) == ["larkspur-hr"]
    assert ids(ok(api.get("/v1/gpts", params={"q": "translate"}))) == []

    edited = ok(api.patch("/v1/gpts/larkspur-hr", json={"instructions": "Answer in one sentence.", "note": "shorter"}))
    assert edited["version"] == 2 and edited["spec"]["instructions"] == "Answer in one sentence."
    first = ok(api.get("/v1/gpts/larkspur-hr", params={"version": 1}))
    assert (first["version"], first["current_version"]) == (1, 2)
    assert first["spec"]["instructions"] == "You answer questions from the handbook."

    with_files = ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("handbook.md", HANDBOOK)),
                             data={"note": "the handbook"}))
    assert with_files["version"] == 3
    [handbook] = with_files["files"]
    assert (handbook["name"], handbook["kind"], handbook["size"]) == ("handbook.md", "knowledge", len(HANDBOOK))
    assert handbook["chunks"] >= 1 and with_files["spec"]["knowledge"] == ["handbook.md"]
    gpt = store.get_gpt("larkspur-hr")
    passages = store.retrieve(connect(), gpt.id, gpt.version, "What is the office cat called?", 1)
    assert "Biscuit" in passages[0].text  # cut into chunks and indexed, as `gpts create --knowledge` does

    newer = HANDBOOK.replace(b"27", b"30")
    replaced = ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("handbook.md", newer))))
    assert [(f["name"], f["size"]) for f in replaced["files"]] == [("handbook.md", len(newer))]  # replaced by name
    without = ok(api.delete("/v1/gpts/larkspur-hr/knowledge/handbook.md"))
    assert (without["version"], without["files"]) == (5, [])
    restored = ok(api.post("/v1/gpts/larkspur-hr/versions/3/restore"))
    assert restored["version"] == 6 and restored["files"] == with_files["files"]
    assert [(v["object"], v["version"], v["note"], v["current"])
            for v in ok(api.get("/v1/gpts/larkspur-hr/versions"))["data"]] == [
        ("gpt.version", 1, "created", False), ("gpt.version", 2, "shorter", False),
        ("gpt.version", 3, "the handbook", False), ("gpt.version", 4, "knowledge: handbook.md", False),
        ("gpt.version", 5, "knowledge: removed handbook.md", False), ("gpt.version", 6, "restored version 3", True)]

    rating = ok(api.post("/v1/gpts/larkspur-hr/ratings", json={"stars": 4, "review": "Knows it.", "user": "ada"}))
    assert rating == {"object": "gpt.rating", "slug": "larkspur-hr", "user": "ada", "stars": 4, "review": "Knows it.",
                      "average": 4.0, "count": 1}
    ok(api.post("/v1/gpts/larkspur-hr/ratings", json={"stars": 2, "user": "bob"}))
    assert ok(api.get("/v1/gpts/larkspur-hr"))["rating"] == 3.0
    trending = ok(api.get("/v1/gpts", params={"sort": "trending", "days": 1}))["data"]
    assert [(g["id"], g["activity"]) for g in trending] == [("larkspur-hr", 2)]
    assert ids(ok(api.get("/v1/gpts", params={"featured": "true"}))) == []
    store.set_featured("larkspur-hr")
    assert ids(ok(api.get("/v1/gpts", params={"featured": "true"}))) == ["larkspur-hr"]

    assert ok(api.delete("/v1/gpts/larkspur-hr")) == {"object": "gpt.deleted", "id": "larkspur-hr", "deleted": True}
    refused(api.get("/v1/gpts/larkspur-hr"), 404, "No GPT named 'larkspur-hr'")
    assert ids(ok(api.get("/v1/gpts"))) == []


def test_export_and_import_a_bundle(api, hr):
    ok(api.post("/v1/gpts", json=hr))
    ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("handbook.md", HANDBOOK))))
    ok(api.patch("/v1/gpts/larkspur-hr", json={"description": "Version three."}))

    exported = api.get("/v1/gpts/larkspur-hr/export", params={"version": 2})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "application/zip"
    assert 'filename="larkspur-hr.gpt"' in exported.headers["content-disposition"]
    assert "spec.json" in zipfile.ZipFile(io.BytesIO(exported.content)).namelist()

    copy = ok(api.post("/v1/gpts/import", files={"file": ("hr.gpt", exported.content)}, data={"slug": "hr-copy"}))
    original = store.get_gpt("larkspur-hr", 2)
    assert copy["id"] == "hr-copy" and copy["spec"] == {**original.spec.to_dict(), "slug": "hr-copy"}
    assert [(f["name"], f["sha256"]) for f in copy["files"]] == [(f.name, f.sha256) for f in original.files]
    refused(api.post("/v1/gpts/import", files={"file": ("hr.gpt", exported.content)}), 409,
            "A GPT with the slug 'larkspur-hr' exists already")


def test_conversations(api, hr):
    ok(api.post("/v1/gpts", json=hr))
    gpt = store.get_gpt("larkspur-hr")
    first = store.start_conversation(gpt, "How many days of leave do I get?")
    citations = [{"file": "handbook.md", "chunk": 0, "quote": "27 days"}]
    store.add_turn(first, "How many days of leave do I get?", "27 days.", 1, citations, {"prompt_tokens": 9})
    second = store.start_conversation(gpt, "Hello")
    store.add_turn(second, "Hello", "Hi!", 1, [], {})

    listed = ok(api.get("/v1/conversations"))["data"]
    assert [c["id"] for c in listed] == [second, first]
    assert listed[1] == {"object": "conversation", "id": first, "slug": "larkspur-hr",
                         "title": "How many days of leave do I get?", "created_at": listed[1]["created_at"],
                         "updated_at": listed[1]["updated_at"], "turns": 1}
    assert len(ok(api.get("/v1/conversations", params={"gpt": "larkspur-hr"}))["data"]) == 2
    assert ok(api.get("/v1/conversations", params={"gpt": "other"}))["data"] == []

    one = ok(api.get(f"/v1/conversations/{first}"))
    assert one["object"] == "conversation" and one["turns"] == 1
    assert [(m["role"], m["content"]) for m in one["messages"]] == [
        ("user", "How many days of leave do I get?"), ("assistant", "27 days.")]
    assert one["messages"][1]["citations"] == citations

    assert ok(api.delete(f"/v1/conversations/{first}")) == {"object": "conversation.deleted", "id": first,
                                                            "deleted": True}
    refused(api.get(f"/v1/conversations/{first}"), 404, f"No conversation '{first}'")
    refused(api.delete(f"/v1/conversations/{first}"), 404, f"No conversation '{first}'")
    assert [c["id"] for c in ok(api.get("/v1/conversations"))["data"]] == [second]


def test_conversations_are_started_and_continued_over_http(api, hr):
    ok(api.post("/v1/gpts", json=hr))
    started = ok(api.post("/v1/conversations", json={"model": "tiny"}))
    assert started == {"object": "conversation", "id": started["id"], "slug": "tiny", "title": "",
                       "created_at": started["created_at"], "updated_at": started["updated_at"], "messages": [],
                       "turns": 0}
    talk = f"/v1/conversations/{started['id']}/turns"
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "timings": {"predicted_per_second": 41.5}}
    first = ok(api.post(talk, json={"user": "How many days of leave do I get?", "assistant": "27.", "usage": usage}))
    assert first["title"] == "How many days of leave do I get?" and first["turns"] == 1  # named by its question
    assert first["messages"][1] == {"role": "assistant", "content": "27.", "at": first["messages"][1]["at"],
                                    "version": None, "citations": [], "usage": usage}  # a model has no versions
    ok(api.post(talk, json={"user": "And dogs?", "assistant": "No."}))
    regenerated = ok(api.post(talk, json={"user": "And dogs?", "assistant": "On Fridays.", "keep": 1}))
    assert [m["content"] for m in regenerated["messages"]] == ["How many days of leave do I get?", "27.", "And dogs?",
                                                               "On Fridays."]
    edited = ok(api.post(talk, json={"user": "How many days, exactly?", "assistant": "Twenty-seven.", "keep": 0}))
    assert [m["content"] for m in edited["messages"]] == ["How many days, exactly?", "Twenty-seven."]
    renamed = ok(api.patch(f"/v1/conversations/{started['id']}", json={"title": "  Leave  "}))
    assert renamed["title"] == "Leave" and renamed["turns"] == 1
    assert ok(api.get(f"/v1/conversations/{started['id']}")) == renamed

    with_gpt = ok(api.post("/v1/conversations", json={"model": "larkspur-hr", "title": "HR questions"}))
    assert (with_gpt["slug"], with_gpt["title"]) == ("larkspur-hr", "HR questions")
    assert ok(api.get("/v1/gpts/larkspur-hr"))["conversations"] == 1  # linked to the GPT: its usage counts it
    annotation = {"type": "file_citation",
                  "file_citation": {"filename": "handbook.md", "chunk": 0, "lines": [3, 3], "quote": "27 days"}}
    answered = ok(api.post(f"/v1/conversations/{with_gpt['id']}/turns",
                           json={"user": "Leave?", "assistant": "27 days.", "citations": [annotation]}))
    assert answered["messages"][1]["citations"] == [{"file": "handbook.md", "chunk": 0, "lines": [3, 3],
                                                     "quote": "27 days"}]  # kept as `gpts run` keeps them
    assert answered["messages"][1]["version"] == 1  # the GPT's version that answered
    ok(api.patch("/v1/gpts/larkspur-hr", json={"description": "Version two."}))
    again = ok(api.post(f"/v1/conversations/{with_gpt['id']}/turns", json={"user": "Sure?", "assistant": "Yes."}))
    assert [m.get("version") for m in again["messages"]] == [None, 1, None, 2]
    assert [c["id"] for c in ok(api.get("/v1/conversations", params={"gpt": "tiny"}))["data"]] == [started["id"]]


def test_conversation_requests_are_checked(api, hr):
    ok(api.post("/v1/gpts", json=hr))
    refused(api.post("/v1/conversations", json={"model": "nope"}), 404, "The model 'nope' does not exist", "model")
    refused(api.post("/v1/conversations", json={}), 400, "required", "model")
    refused(api.post("/v1/conversations", json={"model": "tiny", "title": "   "}), 400, "at least 1", "title")
    refused(api.post("/v1/conversations", json={"model": "tiny", "title": "x" * 201}), 400, "at most 200", "title")
    refused(api.post("/v1/conversations", json={"model": "tiny", "colour": "blue"}), 400, "Extra inputs", "colour")
    conversation = ok(api.post("/v1/conversations", json={"model": "tiny"}))
    talk = f"/v1/conversations/{conversation['id']}/turns"

    refused(api.post(talk, json={"user": " \n", "assistant": "Hi."}), 400, "must not be blank", "user")
    refused(api.post(talk, json={"user": "Hi", "assistant": "Hi.", "keep": -1}), 400, "greater than or equal", "keep")
    refused(api.post(talk, json={"user": "Hi", "assistant": "Hi.", "keep": 1}), 400, "it has 0", "keep")
    refused(api.post(talk, json={"assistant": "Hi."}), 400, "required", "user")
    refused(api.patch(f"/v1/conversations/{conversation['id']}", json={"title": ""}), 400, "at least 1", "title")
    for method, path, body in [("PATCH", "/v1/conversations/nope", {"title": "x"}),
                               ("POST", "/v1/conversations/nope/turns", {"user": "Hi", "assistant": "Hi."})]:
        refused(api.request(method, path, json=body), 404, "No conversation 'nope'")
    assert ok(api.get(f"/v1/conversations/{conversation['id']}"))["turns"] == 0  # nothing refused was written


def test_the_spec_a_builder_fills_in(api):
    spec = ok(api.get("/v1/gpt_spec"))
    assert spec["object"] == "gpt_spec" and spec["max_instructions"] == 8000 and spec["max_starters"] == 4
    assert "writing" in spec["categories"] and spec["visibilities"] == ["private", "link", "public"]
    assert spec["template_variables"] == ["current_date", "current_time", "gpt_name"]
    fields = spec["schema"]["properties"]
    assert {"name", "instructions", "conversation_starters", "examples", "generation", "retrieval"} <= set(fields)
    assert fields["instructions"]["maxLength"] == 8000 and spec["schema"]["required"] == ["name"]


def test_errors_say_what_and_where(api, hr):
    ok(api.post("/v1/gpts", json=hr))
    for method, path in [("GET", "/v1/gpts/nope"), ("PATCH", "/v1/gpts/nope"), ("DELETE", "/v1/gpts/nope"),
                         ("GET", "/v1/gpts/nope/versions"), ("GET", "/v1/gpts/nope/export"),
                         ("POST", "/v1/gpts/nope/versions/1/restore"), ("POST", "/v1/gpts/nope/ratings")]:
        body = {"stars": 3} if path.endswith("ratings") else {"name": "X"} if method == "PATCH" else None
        error = refused(api.request(method, path, json=body), 404, "No GPT named 'nope'")
        assert error["type"] == "not_found_error"
    refused(api.post("/v1/gpts/nope/knowledge", files=knowledge(("a.md", b"text"))), 404, "No GPT named 'nope'")
    refused(api.get("/v1/gpts/larkspur-hr", params={"version": 9}), 404, "larkspur-hr has no version 9")
    refused(api.delete("/v1/gpts/larkspur-hr/knowledge/missing.md"), 404, "has no knowledge file 'missing.md'")

    error = refused(api.post("/v1/gpts", json=hr), 409, "A GPT with the slug 'larkspur-hr' exists already")
    assert error["type"] == "conflict_error"
    for spec, param, says in [
        ({"name": "X", "examples": [[{"role": "user", "content": "hi"}]]}, "examples", "must alternate user"),
        ({"name": "X", "generation": {"temprature": 1}}, "generation.temprature", "not a known field"),
        ({"name": "X", "colour": "blue"}, "colour", "colour: not a known field"),
        ({"name": "X", "category": "games"}, "category", "category"),
        ({"name": "X", "knowledge": ["/etc/passwd"]}, "knowledge", "cannot name knowledge files by path"),
        ({"name": "X", "evaluation": "eval.jsonl"}, "evaluation", "cannot name evaluation files by path"),
        ({"description": "no name"}, "name", "Invalid GPT spec in the request body: name: required"),
    ]:
        refused(api.post("/v1/gpts", json=spec), 400, says, param)
    assert ids(ok(api.get("/v1/gpts"))) == ["larkspur-hr"]  # nothing was created
    refused(api.post("/v1/gpts", content=b"{not json", headers={"content-type": "application/json"}), 400,
            "not valid JSON")

    refused(api.patch("/v1/gpts/larkspur-hr", json={}), 400, "Nothing to change in larkspur-hr")
    refused(api.patch("/v1/gpts/larkspur-hr", json={"slug": "other"}), 400, "slug does not change", "slug")
    refused(api.patch("/v1/gpts/larkspur-hr", json={"knowledge": ["x.md"]}), 400, "uploaded, not named",
            "knowledge")
    refused(api.patch("/v1/gpts/larkspur-hr", json={"tags": "hr"}), 400, "tags", "tags")
    refused(api.post("/v1/gpts/larkspur-hr/ratings", json={"stars": 6}), 400, "stars", "stars")
    refused(api.get("/v1/gpts", params={"sort": "stars"}), 400, "Unknown sort 'stars'")
    refused(api.get("/v1/gpts", params={"q": "hr", "sort": "rating"}), 400, "does not combine", "sort")
    refused(api.get("/v1/gpts", params={"featured": "true", "q": "hr"}), 400, "does not combine", "q")
    refused(api.get("/v1/gpts", params={"days": 3}), 400, "days is the window of sort=trending", "days")
    assert ok(api.get("/v1/gpts/larkspur-hr"))["version"] == 1  # no refused edit made a version


def test_uploads_are_checked_and_never_paths(api, hr, tmp_path):
    ok(api.post("/v1/gpts", json=hr))
    evil = ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("../../../evil.md", HANDBOOK))))
    assert [f["name"] for f in evil["files"]] == ["evil.md"]  # the base name, as a label
    assert not list(tmp_path.rglob("evil.md"))

    error = refused(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("notes.exe", b"MZ"))), 400,
                    "notes.exe")
    assert ".upload-" not in error["message"]  # the upload as the client named it, not our temporary file
    refused(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("empty.md", b""))), 400, "empty.md")
    refused(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("a.md", b"x"), ("a.md", b"y"))), 400,
            "both named 'a.md'", "file")
    refused(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("C:drive.md", b"x"))), 400,
            "cannot name a file of a GPT", "file")
    refused(api.post("/v1/gpts/larkspur-hr/knowledge", data={"note": "no file"}), 400, "file", "file")

    error = refused(api.post("/v1/gpts/import", files={"file": ("junk.gpt", b"not a zip")}), 400, "junk.gpt")
    assert ".upload-" not in error["message"]
    assert ok(api.get("/v1/gpts/larkspur-hr"))["version"] == 2  # only the first upload made a version


def _chunked_upload(base_url: str, path: str, name: str, data: bytes) -> tuple[int, dict]:
    """A multipart upload sent in chunks, with no Content-Length: the server counts what arrives."""
    boundary = "gpts-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, body=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]),
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, encode_chunked=True)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_uploads_over_the_limit_are_refused(start, hr):
    url = start(max_body_bytes=1000, max_upload_bytes=20_000)
    with httpx.Client(base_url=url) as api:
        ok(api.post("/v1/gpts", json=hr))
        ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("big.md", b"word " * 3000))))  # > the body limit
        too_big = b"word " * 5000
        refused(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("huge.md", too_big))), 413, "20,000")
        refused(api.post("/v1/gpts/import", files={"file": ("huge.gpt", too_big)}), 413, "20,000")
        status, body = _chunked_upload(url, "/v1/gpts/larkspur-hr/knowledge", "huge.md", too_big)
        assert status == 413 and "20,000" in body["error"]["message"]
        assert ok(api.get("/v1/gpts/larkspur-hr"))["version"] == 2


# -- gpts import URL -----------------------------------------------------------------------------------------------


def gpts(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real `gpts` command in its own process, with its own store: another machine of the team."""
    environment = {k: v for k, v in os.environ.items() if k != "GPTS_API_KEY"}
    environment.update(GPTS_HOME=str(home), **env)
    command = [str(Path(sys.executable).parent / "gpts"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, check=False)


@pytest.fixture
def gpts_here(monkeypatch, capsys):
    """`gpts ...` in this process, on the server's own store: for the imports that fail (and write nothing)."""
    monkeypatch.delenv("GPTS_API_KEY", raising=False)

    def failing(*args: str) -> str:
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 1 and "Error:" in err and "Traceback" not in err, err
        assert "download.gpt" not in err  # the URL, never the temporary file it was downloaded to
        return " ".join(err.split())  # as one line: rich wraps long messages

    return failing


def test_gpts_import_url_installs_from_another_server(api, base_url, hr, tmp_path):
    ok(api.post("/v1/gpts", json=hr))
    ok(api.post("/v1/gpts/larkspur-hr/knowledge", files=knowledge(("handbook.md", HANDBOOK))))
    other = tmp_path / "other-home"

    done = gpts(other, "import", f"{base_url}/v1/gpts/larkspur-hr", "--as", "hr-copy")
    assert done.returncode == 0, done.stderr
    assert "Imported hr-copy" in done.stdout
    done = gpts(other, "import", f"{base_url}/v1/gpts/larkspur-hr/export?version=1")
    assert done.returncode == 0, done.stderr
    with closing(connect(other / "store" / "gpts.db")) as theirs:
        copy, first = store.get_gpt("hr-copy", conn=theirs), store.get_gpt("larkspur-hr", conn=theirs)
    ours = store.get_gpt("larkspur-hr")
    assert copy.spec == ours.spec.model_copy(update={"slug": "hr-copy"})
    assert [(f.name, f.sha256, f.chunks) for f in copy.files] == [(f.name, f.sha256, f.chunks) for f in ours.files]
    assert first.spec == store.get_gpt("larkspur-hr", 1).spec and first.files == []
    assert [g.slug for g in store.list_gpts()] == ["larkspur-hr"]  # the server's store is as it was
    assert not list((other / "store").glob(".*-*"))  # the download went with the import


def test_gpts_import_url_says_what_went_wrong(api, base_url, hr, gpts_here):
    ok(api.post("/v1/gpts", json=hr))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}"  # once closed, nothing listens there
    for url, says in [
        (f"{base_url}/v1/gpts/nope", f"{base_url}/v1/gpts/nope/export: No GPT named 'nope' in the store"),
        (f"{base_url}/v1/gpts", "sent no .gpt bundle (it sent application/json)"),
        (f"{base_url}/v1/gpts/larkspur-hr", "A GPT with the slug 'larkspur-hr' exists already"),
        (f"{nobody}/v1/gpts/larkspur-hr", f"Cannot download {nobody}/v1/gpts/larkspur-hr/export"),
        ("ftp://example.com/x.gpt", "is not an http(s) URL of a GPT"),
    ]:
        assert says in gpts_here("import", url)
    assert "'Not A Slug' is not a valid slug" in gpts_here("import", f"{base_url}/v1/gpts/larkspur-hr", "--as",
                                                           "Not A Slug")
    with pytest.raises(GptsError, match="sends more than 100 bytes"):
        import_gpt_url(f"{base_url}/v1/gpts/larkspur-hr", "copy", max_bytes=100)
    assert [g.slug for g in store.list_gpts()] == ["larkspur-hr"]


def test_gpts_import_url_sends_the_api_key(start, hr, tmp_path, gpts_here):
    url = start(api_keys=["team-key"])
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer team-key"}) as api:
        ok(api.post("/v1/gpts", json=hr))
    told = gpts_here("import", f"{url}/v1/gpts/larkspur-hr", "--as", "copy")
    assert "wants an API key (401" in told and "--api-key KEY, or set GPTS_API_KEY" in told
    told = gpts_here("import", f"{url}/v1/gpts/larkspur-hr", "--as", "copy", "--api-key", "wrong")
    assert "refused the API key given (401" in told
    done = gpts(tmp_path / "other-home", "import", f"{url}/v1/gpts/larkspur-hr", GPTS_API_KEY="team-key")
    assert done.returncode == 0 and "Imported larkspur-hr" in done.stdout, done.stderr
