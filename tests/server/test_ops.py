"""Operations: /health, /metrics, the access log, a full queue, and shutting down on SIGTERM."""

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families

from helpers import tiny_model

from gpts.server.app import ServerSettings, create_app

KEY = "gpts-test-key-for-ops"


def wait_ready(url: str) -> None:
    """Poll /health until the models are in (a failed load keeps it at 503: the bound turns that into a failure)."""
    for _ in range(1200):
        if httpx.get(f"{url}/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the server's models did not load")


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_health_is_503_until_the_models_are_in_and_needs_no_key(serve, tiny_model_path, tmp_path):
    broken = shutil.copytree(tiny_model_path, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not weights")
    loading = serve(create_app(ServerSettings(models=[str(broken)], api_keys=[KEY])))
    answer = httpx.get(f"{loading}/health")  # a model that cannot load never becomes ready
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "loading"

    ready = serve(create_app(ServerSettings(models=[str(tiny_model_path)], api_keys=[KEY])))
    wait_ready(ready)
    assert httpx.get(f"{ready}/health").json() == {"status": "ok"}


def test_metrics_count_requests_tokens_and_engine_load(serve, tiny_model_path):
    url = serve(create_app(ServerSettings(models=[str(tiny_model_path)], api_keys=[KEY])))
    wait_ready(url)
    key = {"Authorization": f"Bearer {KEY}"}
    before = scrape(url, key)
    chat_ok = ("gpts_http_requests_total", (("method", "POST"), ("route", "/v1/chat/completions"), ("status", "200")))
    refused = ("gpts_http_requests_total", (("method", "GET"), ("route", "/v1/models"), ("status", "401")))

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=5, temperature=0)
    httpx.get(f"{url}/v1/models")
    after = scrape(url, key)

    assert after[chat_ok] == before.get(chat_ok, 0) + 1
    assert after[refused] == before.get(refused, 0) + 1
    model = (("model", "tiny"),)
    assert after[("gpts_prompt_tokens_total", model)] == answer.usage.prompt_tokens
    assert after[("gpts_generation_tokens_total", model)] == answer.usage.completion_tokens
    assert after[("gpts_time_to_first_token_seconds_count", model)] == 1
    assert after[("gpts_e2e_request_latency_seconds_count", model)] == 1
    assert after[("gpts_slots", model)] >= 1  # the engine's load, by the id of the model it runs
    assert after[("gpts_busy_slots", model)] == 0 and after[("gpts_queue_depth", model)] == 0
    assert after[("gpts_reused_prompt_tokens_total", model)] == answer.usage.prompt_tokens_details.cached_tokens


def test_one_access_log_line_per_request_without_key_or_query(serve, tiny_model_path, caplog):
    url = serve(create_app(ServerSettings(models=[str(tiny_model_path)], api_keys=[KEY])))
    wait_ready(url)
    with caplog.at_level(logging.INFO, logger="gpts.server.access"):
        httpx.get(f"{url}/metrics?token=secret-in-the-query", headers={"Authorization": f"Bearer {KEY}"})
        httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "tiny", "messages": [{"role": "user", "content": "a secret body"}], "max_tokens": 2})
        httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer gpts-wrong-key"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gpts.server.access"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/metrics", 200), ("POST", "/v1/chat/completions", 200), ("GET", "/v1/models", 401)]
    assert all(line["client"] == "127.0.0.1" and line["duration_ms"] >= 0 for line in lines)
    assert [line["model"] for line in lines] == [None, "tiny", None]
    for secret in (KEY, "gpts-wrong-key", "secret-in-the-query", "a secret body"):
        assert secret not in caplog.text


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    """A tiny model with room for long answers: a stream that runs until its client closes it."""
    return tiny_model(tmp_path_factory.mktemp("models") / "long", context_length=4096)


def _chat(url: str, max_tokens: int):
    """A streamed chat request to the long model (greedy: it writes to max_tokens)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    return client.chat.completions.create(model="long", messages=[{"role": "user", "content": "the"}],
                                          max_tokens=max_tokens, temperature=0, stream=True)


def _finish_reasons(chunks) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def test_a_client_over_a_full_queue_gets_429_and_the_others_go_on(serve, long_model):
    url = serve(create_app(ServerSettings(models=[str(long_model)], api_keys=[KEY], max_batch=1, max_queue=1)))
    wait_ready(url)
    engine = (("model", "long"),)

    def load() -> tuple[float, float]:
        now = scrape(url, {"Authorization": f"Bearer {KEY}"})
        return now.get(("gpts_busy_slots", engine)), now.get(("gpts_queue_depth", engine))

    running = _chat(url, 4000)  # holds the only slot until it is closed
    chunks = iter(running)
    next(chunks)
    waiting: list[str] = []
    second = threading.Thread(target=lambda: waiting.extend(_finish_reasons(_chat(url, 5))))
    second.start()
    while load() != (1, 1):  # one decodes, one waits: the queue is full
        time.sleep(0.01)

    with pytest.raises(openai.RateLimitError) as refused:
        list(_chat(url, 5))
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.code == "queue_full"

    assert all(next(chunks).choices[0].delta.content is not None for _ in range(3))  # the running one goes on
    running.close()  # its client leaves: the slot is free for the waiting one
    second.join()
    assert waiting == ["length"]


def test_sigterm_lets_the_running_stream_finish_and_exits_0(long_model, tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "w") as out:  # a file, not a pipe: a pipe nobody reads would stop the server once full
        server = subprocess.Popen([sys.executable, "-c", "from gpts.cli import main; main()", "serve", "--port", "0",
                                   "--model", str(long_model), "--api-key", KEY], stdout=out, stderr=out)
    try:
        url = None
        while url is None:
            assert server.poll() is None, f"gpts serve ended before it listened:\n{log.read_text()}"
            found = re.search(r"OpenAI's API: (http://\S+)/v1", log.read_text())
            url = found and found[1]
            time.sleep(0.05)
        wait_ready(url)
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "long", "messages": [{"role": "user", "content": "the"}],
                                "max_tokens": 100, "temperature": 0, "stream": True,
                                "stream_options": {"include_usage": True}}, timeout=None) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")  # the request is in
            server.send_signal(signal.SIGTERM)
            rest = [line.removeprefix("data: ") for line in lines if line]
        assert rest.pop() == "[DONE]"
        chunks = [ChatCompletionChunk.model_validate_json(line) for line in rest]
        assert _finish_reasons(chunks) == ["length"] and chunks[-1].usage.completion_tokens == 100
        assert server.wait() == 0
        assert '"path": "/v1/chat/completions", "status": 200' in log.read_text()  # the access log, on stdout
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
