"""A GPT measured and tuned over HTTP (the builder's "evaluate" and "tune"): its evaluation set uploaded, scored with
the model the server has loaded, and LoRA-tuned with its progress streamed, on a real uvicorn server on loopback with
a tiny random model."""

import json

import httpx2 as httpx
import pytest

from gpts.server.app import ServerSettings, create_app
from helpers import running, tiny_model
from test_store_api import ok, refused

ROWS = [{"text": f"review number {i} is {'good' if i % 2 else 'bad'}", "label": "good" if i % 2 else "bad"}
        for i in range(8)]
EVALUATION = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model", context_length=1024)  # room for a GPT's prompt


@pytest.fixture
def api(serve, model_dir):
    url = serve(create_app(ServerSettings(models=[str(model_dir)])))
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


@pytest.fixture
def sentiment(api, model_dir):
    """A GPT with examples to learn from and no evaluation set yet."""
    spec = {"name": "Tiny sentiment", "instructions": "Answer good or bad.", "model": str(model_dir),
            "examples": [[{"role": "user", "content": "review one is good"}, {"role": "assistant", "content": "good"}],
                         [{"role": "user", "content": "review two is bad"}, {"role": "assistant", "content": "bad"}]]}
    response = api.post("/v1/gpts", json=spec)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def upload(api, slug: str, name: str, data: bytes):
    return api.post(f"/v1/gpts/{slug}/evaluation", files={"file": (name, data, "application/jsonl")})


def events(response) -> list:
    """The data of each server-sent event, [DONE] last."""
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_an_evaluation_set_is_uploaded_and_the_gpt_measured(api, sentiment):
    error = refused(api.post(f"/v1/gpts/{sentiment}/evaluate"), 400, "has no evaluation set")
    assert f"POST /v1/gpts/{sentiment}/evaluation" in error["message"]  # says how to add one
    assert error["code"] == "no_evaluation_set"

    with_set = ok(upload(api, sentiment, "../reviews.jsonl", EVALUATION))
    assert with_set["version"] == 2 and with_set["spec"]["evaluation"] == "reviews.jsonl"
    assert [(f["kind"], f["name"], f["size"]) for f in with_set["files"]] == [
        ("evaluation", "reviews.jsonl", len(EVALUATION))]
    assert with_set["spec"]["examples"] == ok(api.get(f"/v1/gpts/{sentiment}", params={"version": 1}))["spec"][
        "examples"]  # the rest of the spec as it was

    measured = ok(api.post(f"/v1/gpts/{sentiment}/evaluate"))
    assert {k: measured[k] for k in ("object", "slug", "version", "kind", "metric", "n")} == {
        "object": "gpt.evaluation", "slug": sentiment, "version": 2, "kind": "classify", "metric": "accuracy", "n": 8}
    assert 0 <= measured["score"] <= 1 and measured["details"]["accuracy"] == measured["score"]
    assert ok(api.get(f"/v1/gpts/{sentiment}"))["score"]["score"] == measured["score"]  # recorded
    assert ok(api.get("/v1/gpts", params={"sort": "score"}))["data"][0]["id"] == sentiment

    replaced = ok(upload(api, sentiment, "more.jsonl", EVALUATION + EVALUATION))
    assert [f["name"] for f in replaced["files"]] == ["more.jsonl"]  # one set: the new one replaces the old
    assert ok(api.post(f"/v1/gpts/{sentiment}/evaluate"))["n"] == 16


def test_what_cannot_be_measured_is_refused(api, sentiment):
    error = refused(upload(api, sentiment, "notes.jsonl", b'{"question": "?"}\n'), 400, "notes.jsonl")
    assert "not an evaluation set" in error["message"] and ".upload-" not in error["message"]
    refused(upload(api, sentiment, "C:notes.jsonl", EVALUATION), 400, "cannot name a file of a GPT", "file")
    refused(upload(api, "nope", "reviews.jsonl", EVALUATION), 404, "No GPT named 'nope'")
    refused(api.post("/v1/gpts/nope/evaluate"), 404, "No GPT named 'nope'")
    assert ok(api.get(f"/v1/gpts/{sentiment}"))["version"] == 1  # no refused upload made a version


def test_a_gpt_is_tuned_with_its_progress_streamed(api, sentiment):
    ok(upload(api, sentiment, "reviews.jsonl", EVALUATION))
    with api.stream("POST", f"/v1/gpts/{sentiment}/tune", json={"max_steps": 2, "n_epochs": 1}) as response:
        told = events(response)
    *running, result = told
    assert {e["type"] for e in running} == {"message", "progress"}
    assert any(e["type"] == "progress" and e["unit"] == "steps" for e in running)
    assert any(e["type"] == "message" and e["text"].startswith("Before tuning: accuracy") for e in running)
    assert result["type"] == "result" and result["version"] == 3 and result["examples"] == 2
    assert (result["before"]["n"], result["after"]["n"]) == (8, 8)
    tuned = ok(api.get(f"/v1/gpts/{sentiment}"))
    assert tuned["version"] == 3 and tuned["spec"]["model"] == result["adapter"]
    assert tuned["score"]["score"] == result["after"]["score"]
    reply = ok(api.post("/v1/chat/completions", json={"model": sentiment, "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "review is good"}]}))
    assert reply["model"] == sentiment  # the server serves the tuned version, on its adapter


def test_a_tune_that_cannot_run_ends_its_stream_with_the_error(api, model_dir):
    ok(api.post("/v1/gpts", json={"name": "No examples", "model": str(model_dir)}))
    refused(api.post("/v1/gpts/no-examples/tune", json={"n_epochs": 0}), 400, "n_epochs", "n_epochs")
    refused(api.post("/v1/gpts/no-examples/tune", json={"max_step": 1}), 400, "Extra inputs", "max_step")
    refused(api.post("/v1/gpts/nope/tune"), 404, "No GPT named 'nope'")
    with api.stream("POST", "/v1/gpts/no-examples/tune") as response:
        (error,) = events(response)
    assert error["type"] == "error" and "has no examples to learn from" in error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


def test_closing_the_stream_stops_the_tuning(api, model_dir, sentiment, gpts_home):
    """A tuning of 100 steps, left at its first: it stops at its next step (the server it ran on waits for its
    worker thread to end), and the GPT is as it was."""
    with (running(create_app(ServerSettings(models=[str(model_dir)]))) as url,
          httpx.stream("POST", f"{url}/v1/gpts/{sentiment}/tune", json={"n_epochs": 50, "batch_size": 1},
                       timeout=120) as response):
        next(line for line in response.iter_lines() if '"unit": "steps"' in line)  # training: leave
    (run,) = (gpts_home / "store" / "adapters").iterdir()
    assert len((run / "metrics.jsonl").read_text().splitlines()) < 100  # a row a step
    assert ok(api.get(f"/v1/gpts/{sentiment}"))["version"] == 1  # interrupted: no new version
