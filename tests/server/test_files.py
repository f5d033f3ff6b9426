"""The Files API through the official `openai` client against a real server: upload, list, retrieve, content, delete;
a file with bad lines, a name that looks like a path, another purpose, an upload over the limit."""

from pathlib import Path

import openai
import pytest

from gpts.server.app import ServerSettings, create_app
from gpts.store.db import store_dir

CHATS = Path(__file__).resolve().parents[2] / "examples" / "chats.jsonl"
GOOD_LINE = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'


@pytest.fixture
def start(serve, tiny_model_path):
    """start(**settings) -> an openai client of a new server."""
    def start(**settings) -> openai.OpenAI:
        url = serve(create_app(ServerSettings(models=[str(tiny_model_path)], **settings)))
        return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    return start


def kept_files() -> list[Path]:
    folder = store_dir() / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_upload_list_retrieve_content_delete(start):
    api = start()
    uploaded = api.files.create(file=open(CHATS, "rb"), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.object == "file" and uploaded.purpose == "fine-tune"
    assert (uploaded.filename, uploaded.bytes) == ("chats.jsonl", CHATS.stat().st_size)
    assert kept_files() == [store_dir() / "uploads" / uploaded.id]  # kept by its id, not its name

    assert api.files.retrieve(uploaded.id) == uploaded
    assert api.files.content(uploaded.id).content == CHATS.read_bytes()
    second = api.files.create(file=("more.jsonl", GOOD_LINE * 3), purpose="fine-tune")
    assert [f.id for f in api.files.list()] == [second.id, uploaded.id]  # newest first
    first_page = api.files.list(limit=1, order="asc")
    assert [f.id for f in first_page.data] == [uploaded.id] and first_page.has_more
    assert [f.id for f in api.files.list(limit=1, order="asc", after=uploaded.id).data] == [second.id]
    assert [f.id for f in api.files.list(limit=1, order="asc")] == [uploaded.id, second.id]  # the client pages on
    assert list(api.files.list(purpose="fine-tune-results")) == []

    deleted = api.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    assert kept_files() == [store_dir() / "uploads" / second.id]
    for gone in (api.files.retrieve, api.files.content, api.files.delete):
        with pytest.raises(openai.NotFoundError, match=uploaded.id):
            gone(uploaded.id)


def test_a_file_with_bad_lines_is_refused_naming_them(start):
    api = start()
    bad = GOOD_LINE * 2 + b'{"messages": [oops\n' + GOOD_LINE + b'{"messages": [{"role": "user", "content": "Hi"}]}\n'
    with pytest.raises(openai.BadRequestError) as refused:
        api.files.create(file=("my data.jsonl", bad), purpose="fine-tune")
    message = refused.value.message
    assert "my data.jsonl (chat format, from its first line) has 2 errors" in message
    assert "invalid_json: 1 (line 3)" in message and "example_missing_assistant_message: 1 (line 5)" in message
    assert str(store_dir()) not in message  # the file as the client named it, not where the server put it
    assert refused.value.param == "file"
    problems = refused.value.body["errors"]  # the same, as data for a program to show
    assert sorted((p["lines"], p["kind"], p["count"]) for p in problems) == [
        ([3], "invalid_json", 1), ([5], "example_missing_assistant_message", 1)]
    invalid = next(p for p in problems if p["kind"] == "invalid_json")
    assert invalid["description"] == "the line is not valid JSON" and invalid["more_lines"] == 0
    assert refused.value.body["example_line"].startswith('{"messages": [')
    assert kept_files() == [] and list(api.files.list()) == []

    with pytest.raises(openai.BadRequestError, match="empty.jsonl is empty"):
        api.files.create(file=("empty.jsonl", b""), purpose="fine-tune")


def test_a_name_is_never_a_path(start, tmp_path):
    api = start()
    uploaded = api.files.create(file=("../../escape.jsonl", GOOD_LINE), purpose="fine-tune")
    assert uploaded.filename == "../../escape.jsonl"
    assert kept_files() == [store_dir() / "uploads" / uploaded.id]
    assert not list(tmp_path.rglob("escape.jsonl"))


def test_other_purposes_and_oversized_uploads_are_refused(start):
    api = start(max_upload_bytes=1000)
    with pytest.raises(openai.BadRequestError) as refused:
        api.files.create(file=("notes.jsonl", GOOD_LINE), purpose="assistants")
    assert refused.value.param == "purpose" and "fine-tune" in refused.value.message
    with pytest.raises(openai.APIStatusError) as refused:
        api.files.create(file=("big.jsonl", GOOD_LINE * 20), purpose="fine-tune")
    assert refused.value.status_code == 413
    assert kept_files() == []
