"""OpenAI's model endpoints (/v1/models, /v1/chat/completions, /v1/completions) on a real server on a loopback port,
through the official `openai` client: a tiny random model where the behaviour is tested, the bundled SmolLM2 where the
answer itself matters (a custom GPT citing its knowledge, JSON mode), and `gpts serve` itself in a subprocess."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gpts import store
from gpts.server.app import ServerSettings, create_app
from gpts.spec import parse_spec
from gpts.tokenizer import Tokenizer

HELLO = [{"role": "user", "content": "hello world"}]


def start(serve, **settings) -> tuple[openai.OpenAI, object]:
    """A server for `settings`, and an OpenAI client pointed at it (no retries: a refusal is what a test sees)."""
    app = create_app(ServerSettings(**settings))
    url = serve(app)
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), app


@pytest.fixture
def client(serve, tiny_model_path):
    """A server of the tiny model, served as "tiny" (its directory's name)."""
    return start(serve, models=[str(tiny_model_path)])[0]


def tiny_gpt(tiny_model_path, **fields) -> str:
    spec = parse_spec({"name": "Tiny helper", "instructions": "Be brief.", "model": str(tiny_model_path), **fields})
    return store.create_gpt(spec).slug


# -- models -------------------------------------------------------------------------------------------------------


def test_models_are_the_served_ones_and_the_stores_gpts(client, tiny_model_path):
    slug = tiny_gpt(tiny_model_path)  # made after the server started: the store is read at each request

    models = client.models.list().data
    assert [m.id for m in models] == ["tiny", "tiny-helper"]
    assert all(m.object == "model" and m.created > 0 for m in models)
    gpt = client.models.retrieve(slug)
    assert gpt.id == slug and gpt.parent == str(tiny_model_path)
    assert client.models.retrieve("tiny").owned_by == "gpts"

    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert (missing.value.param, missing.value.code) == ("model", "model_not_found")
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(model="no-such-model", messages=HELLO)

    reply = client.chat.completions.create(model=slug, messages=HELLO, max_tokens=3)
    assert reply.model == slug and reply.choices[0].message.annotations == []  # a GPT without knowledge cites none
    with pytest.raises(openai.BadRequestError, match="custom GPT") as refused:
        client.completions.create(model=slug, prompt="hello")
    assert refused.value.param == "model"
    with pytest.raises(openai.BadRequestError, match="instructions are the system message"):
        client.chat.completions.create(model=slug, messages=[{"role": "system", "content": "x"}, *HELLO])


# -- chat and completions -----------------------------------------------------------------------------------------


def test_chat_answers_whole_and_streamed_alike(client, tiny_model_path):
    whole = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=6)
    (choice,) = whole.choices
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-") and whole.model == "tiny"
    assert choice.message.role == "assistant" and choice.finish_reason == "length" and choice.logprobs is None
    prompt_tokens = len(Tokenizer.from_dir(tiny_model_path).encode_chat(HELLO))
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == \
        (prompt_tokens, 6, prompt_tokens + 6)
    assert whole.timings["prompt_n"] == prompt_tokens and whole.timings["predicted_n"] == 6
    assert whole.timings["predicted_per_second"] > 0

    chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=6,
                                                 stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    *answer, usage = chunks
    assert "".join(c.choices[0].delta.content or "" for c in answer) == choice.message.content
    assert [c.choices[0].finish_reason for c in answer if c.choices[0].finish_reason] == ["length"]
    assert all(c.usage is None for c in answer)
    assert usage.choices == [] and usage.usage.completion_tokens == 6
    assert usage.usage.prompt_tokens == prompt_tokens
    assert usage.usage.prompt_tokens_details.cached_tokens > 0  # the same prompt again: its prefix was kept
    assert usage.timings["predicted_n"] == 6

    plain = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked


def test_completions_take_texts_and_token_ids_and_give_n_samples_of_each(client, tiny_model_path):
    tokenizer = Tokenizer.from_dir(tiny_model_path)
    prompts = ["hello world", "the quick brown fox"]
    sampled = client.completions.create(model="tiny", prompt=prompts, n=2, temperature=1, seed=5, max_tokens=4)
    assert sampled.object == "text_completion" and sampled.id.startswith("cmpl-")
    assert [c.index for c in sampled.choices] == [0, 1, 2, 3]  # prompt by prompt, n samples each
    assert sampled.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)  # once per prompt
    assert sampled.usage.completion_tokens == 16
    assert len({c.text for c in sampled.choices}) > 1

    greedy = client.completions.create(model="tiny", prompt="hello world", temperature=0, max_tokens=5)
    ids = client.completions.create(model="tiny", prompt=tokenizer.encode("hello world"), temperature=0, max_tokens=5)
    assert ids.choices[0].text == greedy.choices[0].text
    assert greedy.usage.completion_tokens == 5  # OpenAI's max_tokens

    streamed = list(client.completions.create(model="tiny", prompt=prompts, n=2, temperature=1, seed=5, max_tokens=4,
                                              stream=True))
    texts = ["", "", "", ""]
    for chunk in streamed:
        assert chunk.object == "text_completion"
        for c in chunk.choices:
            texts[c.index] += c.text
    assert texts == [c.text for c in sampled.choices]


def test_the_same_seed_gives_the_same_text_and_n_samples_differ(client):
    def sample(seed: int, n: int = 1) -> list[str]:
        reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=1, seed=seed, n=n,
                                               max_tokens=12)
        return [c.message.content for c in reply.choices]

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)
    samples = sample(11, n=3)
    assert len(samples) == 3 and len(set(samples)) == 3
    assert samples == sample(11, n=3)


def test_stop_cuts_the_text_before_it(client):
    def complete(**stop):
        return client.completions.create(model="tiny", prompt="the quick", temperature=1, seed=3, max_tokens=16,
                                         **stop).choices[0]

    full = complete().text
    assert len(full) > 8
    stop = full[5:7]
    cut = complete(stop=stop)
    assert (cut.text, cut.finish_reason) == (full[:full.index(stop)], "stop")
    assert complete(stop=["not in it", stop]).text == cut.text


def test_logprobs_in_openai_shape(client):
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=5, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == 5 and "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode())
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert (t.top_logprobs[0].token, t.top_logprobs[0].logprob) == (t.token, t.logprob)  # greedy: the top one

    streamed = [c.choices[0].logprobs for c in client.chat.completions.create(
        model="tiny", messages=HELLO, temperature=0, max_tokens=5, logprobs=True, stream=True) if c.choices[0].logprobs]
    assert [lp.content[0].token for lp in streamed] == [t.token for t in content]
    assert all(lp.content[0].top_logprobs == [] for lp in streamed)

    text = client.completions.create(model="tiny", prompt="hello", temperature=0, max_tokens=4, logprobs=2).choices[0]
    lp = text.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert all(token in top and len(top) <= 3 for token, top in zip(lp.tokens, lp.top_logprobs))
    assert lp.text_offset[0] == 0


def test_logprob_bytes_are_the_tokens_own_and_offsets_count_characters(client, tiny_model_path):
    """A token may hold part of a UTF-8 character: its `bytes` are its own, so that joined they spell the text."""
    tokenizer = Tokenizer.from_dir(tiny_model_path)
    prompt = tokenizer.encode("hello")
    emoji = tokenizer.encode("😀é", add_special=False)  # bytes the tiny byte-level vocabulary splits
    first = client.completions.create(model="tiny", prompt=prompt + emoji, max_tokens=1, n=2, temperature=1)
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # the second sample's shared prefill is no cache
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=1, seed=3, max_tokens=12,
                                           logprobs=True, top_logprobs=20)
    content = reply.choices[0].logprobs.content
    assert bytes(b for t in content for b in t.bytes).decode("utf-8", errors="replace") == \
        reply.choices[0].message.content
    tops = [e for t in content for e in t.top_logprobs]  # the tiny vocabulary: mostly single bytes, half of them
    assert any(e.token == "\ufffd" and len(e.bytes) == 1 and e.bytes[0] >= 0x80 for e in tops)  # part of a character
    text = client.completions.create(model="tiny", prompt=prompt, temperature=1, seed=3, max_tokens=12, logprobs=0,
                                     n=2).choices[1]
    offsets = text.logprobs.text_offset
    assert offsets == sorted(offsets) and offsets[-1] <= len(text.text)


def test_json_schema_output_is_valid_json(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=1, seed=1, max_tokens=20,
                                           response_format={"type": "json_schema",
                                                            "json_schema": {"name": "answer", "schema": schema}})
    assert json.loads(reply.choices[0].message.content) in ({"ok": True}, {"ok": False})
    assert reply.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=HELLO, response_format={
            "type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "object", "$ref": "#/nowhere"}}})
    assert bad.value.param == "response_format"


def test_bad_requests_are_refused_naming_what_is_wrong(client):
    def refused(**params) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**{"model": "tiny", "messages": HELLO, **params})
        return e.value

    too_long = refused(messages=[{"role": "user", "content": "hello world " * 100}])  # tiny's context: 128 tokens
    assert too_long.code == "context_length_exceeded" and "context" in too_long.message
    assert too_long.param == "messages" and "--truncate" not in too_long.message  # API words, not the CLI's
    assert refused(temperature=3).param == "temperature"
    assert refused(n=0).param == "n"
    assert refused(stop=["a", "b", "c", "d", "e"]).param == "stop"
    needs = refused(top_logprobs=2)
    assert needs.param == "top_logprobs" and "top_logprobs needs logprobs: true" in needs.message
    assert refused(tools=[{"type": "function", "function": {"name": "f"}}]).param == "tools"
    assert refused(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]).param \
        .startswith("messages.0.content")
    assert refused(messages=[]).param == "messages"
    too_many = refused(n=9)  # more samples than the engine decodes at once (8)
    assert "--max-batch" in too_many.message and too_many.param == "n"
    with pytest.raises(openai.BadRequestError) as echo:
        client.completions.create(model="tiny", prompt="hello", echo=True)
    assert echo.value.param == "echo"

    # Fields OpenAI's clients send that gpts has no use for are ignored, as OpenAI ignores unknown ones.
    ok = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1, user="u1",
                                        extra_body={"some_new_field": True, "parallel_tool_calls": False})
    assert ok.usage.completion_tokens == 1


# -- the builder's preview ----------------------------------------------------------------------------------------


def preview(client, spec: dict, model: str | None = None, **params):
    """POST /v1/gpts/preview, its answer read as the openai client reads a chat completion (or its chunks)."""
    body = {"messages": HELLO, "temperature": 0, "max_tokens": 4, "spec": spec, **params}
    if model is not None:
        body["model"] = model
    if params.get("stream"):
        return list(client.post("/gpts/preview", body=body, cast_to=ChatCompletionChunk, stream=True,
                                stream_cls=openai.Stream[ChatCompletionChunk]))
    return client.post("/gpts/preview", body=body, cast_to=ChatCompletion)


def test_a_preview_answers_as_the_draft_will_once_saved(client, tiny_model_path):
    slug = tiny_gpt(tiny_model_path)
    draft = {"name": "Tiny helper", "instructions": "Answer in one short sentence, politely.",
             "model": str(tiny_model_path)}
    previewed = preview(client, draft, slug)
    assert previewed.object == "chat.completion" and previewed.model == slug
    saved = client.chat.completions.create(model=slug, messages=HELLO, temperature=0, max_tokens=4)
    assert saved.usage.prompt_tokens < previewed.usage.prompt_tokens  # the draft's longer instructions

    store.edit_gpt(slug, {"instructions": draft["instructions"]})
    after = client.chat.completions.create(model=slug, messages=HELLO, temperature=0, max_tokens=4)
    assert (after.choices[0].message.content, after.usage.prompt_tokens) == (previewed.choices[0].message.content,
                                                                             previewed.usage.prompt_tokens)
    *chunks, usage = preview(client, draft, slug, stream=True, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == previewed.choices[0].message.content
    assert usage.usage.prompt_tokens == previewed.usage.prompt_tokens and usage.timings["predicted_n"] == 4

    new = preview(client, {"name": "Brand new", "model": str(tiny_model_path)})  # a GPT not saved yet
    assert new.model == "brand-new" and new.choices[0].message.annotations == []
    assert [g.slug for g in store.list_gpts()] == [slug]  # a preview saves nothing


def test_a_preview_of_a_bad_draft_names_the_field(client, tiny_model_path):
    def refused(spec: dict, model: str | None = None, **params) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as e:
            preview(client, spec, model, **params)
        return e.value

    tiny = str(tiny_model_path)
    typo = refused({"name": "X", "model": tiny, "generation": {"temprature": 1}})
    assert (typo.status_code, typo.param) == (400, "spec.generation.temprature") and "not a known field" in typo.message
    assert refused({"description": "no name", "model": tiny}).param == "spec.name"
    unknown = refused({"name": "X", "model": "no-such-model"})
    assert (unknown.status_code, unknown.param) == (400, "spec.model") and "No model named" in unknown.message
    missing = refused({"name": "X", "model": tiny}, "no-such-gpt")
    assert (missing.status_code, missing.param, missing.code) == (404, "model", "model_not_found")
    system = refused({"name": "X", "model": tiny}, messages=[{"role": "system", "content": "x"}, *HELLO])
    assert system.param == "messages" and "instructions are the system message" in system.message
    assert refused({"name": "X", "model": tiny}, temperature=3).param == "temperature"
    with pytest.raises(openai.BadRequestError) as no_spec:
        client.post("/gpts/preview", body={"messages": HELLO}, cast_to=ChatCompletion)
    assert no_spec.value.param == "spec"


def test_a_client_that_goes_away_frees_its_slot(serve, tiny_model_path, tmp_path):
    """One slot, and a first request that would take 4000 steps: the second one gets the slot as soon as the first
    client leaves, whether it was reading a stream or waiting for a whole answer."""
    endless = tmp_path / "endless"
    shutil.copytree(tiny_model_path, endless)
    config = json.loads((endless / "config.json").read_text())
    (endless / "config.json").write_text(json.dumps({**config, "context_length": 4096}))
    (endless / "generation_config.json").write_text(json.dumps({"ignore_eos": True}))
    client, app = start(serve, models=[str(endless)], max_batch=1)
    url = str(client.base_url).rstrip("/")
    long = {"model": "endless", "prompt": "hello", "max_tokens": 4000}

    with httpx.stream("POST", f"{url}/completions", json={**long, "stream": True}, timeout=60) as stream:
        assert next(stream.iter_lines()).startswith("data: ")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/completions", json=long, timeout=httpx.Timeout(60, read=1))

    after = client.completions.create(model="endless", prompt="hello", max_tokens=3)
    assert after.choices[0].finish_reason == "length"
    (stats,) = app.state.serving.engine_stats().values()
    assert stats["busy_slots"] == 0 and stats["running"] == 0
    assert stats["generated_tokens"] < 4000  # both long requests were cut short


# -- on the bundled model -----------------------------------------------------------------------------------------

HANDBOOK = ("# Larkspur Labs handbook\n\nEvery employee gets 27 days of paid leave a year.\n\n"
            "The Larkspur Labs office cat is named Biscuit Thunderpaw. Biscuit is fed at 9 am.\n\n"
            "Dogs are welcome on Fridays only.\n")


def test_a_custom_gpt_answers_from_its_knowledge_and_cites_it(serve, bundled_gguf, tmp_path):
    (tmp_path / "handbook.md").write_text(HANDBOOK)
    spec = parse_spec({"name": "Larkspur HR", "knowledge": ["handbook.md"],
                       "instructions": "You answer questions from Larkspur Labs employees using the handbook."})
    slug = store.create_gpt(spec, tmp_path).slug
    client, _ = start(serve)
    question = [{"role": "user", "content": "What is the name of the Larkspur Labs office cat?"}]

    assert client.models.list().data[0].id == "smollm2-135m-instruct"
    reply = client.chat.completions.create(model=slug, messages=question, temperature=0, max_tokens=40)
    message = reply.choices[0].message
    assert "Biscuit" in message.content
    (annotation,) = message.annotations
    assert annotation.type == "file_citation"
    citation = annotation.model_extra["file_citation"]
    assert citation["filename"] == "handbook.md" and citation["chunk"] == 0 and "Biscuit" in citation["quote"]

    chunks = list(client.chat.completions.create(model=slug, messages=question, temperature=0, max_tokens=40,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    (last,) = [c for c in chunks if c.choices[0].finish_reason]
    assert [a["file_citation"] for a in last.choices[0].delta.annotations] == [citation]  # an extension: dicts

    # The builder's preview of the saved spec, unsaved: the same answer, from the same knowledge, cited alike.
    previewed = client.post("/gpts/preview", cast_to=ChatCompletion, body={
        "model": slug, "spec": store.get_gpt(slug).spec.to_dict(), "messages": question, "temperature": 0,
        "max_tokens": 40}).choices[0].message
    assert (previewed.content, previewed.annotations) == (message.content, message.annotations)

    data = client.chat.completions.create(model="default", temperature=0, max_tokens=60, response_format={
        "type": "json_object"}, messages=[{"role": "user", "content": "Give the capital of France as JSON."}])
    assert data.model == "smollm2-135m-instruct" and data.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(data.choices[0].message.content), dict)


# -- the command --------------------------------------------------------------------------------------------------


def test_gpts_serve_serves_until_stopped(tiny_model_path):
    gpts = Path(sys.executable).parent / "gpts"
    server = subprocess.Popen([str(gpts), "serve", "--model", str(tiny_model_path), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        first = server.stdout.readline()
        assert first.startswith("Open http://127.0.0.1:") and " in a browser" in first, first + server.stderr.read()
        api = server.stdout.readline()
        assert api.strip() == f"OpenAI's API: {first.split()[1]}v1"
        assert server.stdout.readline().strip() == "Models: tiny"
        client = openai.OpenAI(base_url=api.split()[-1], api_key="unused", max_retries=0)
        assert "tiny" in [m.id for m in client.models.list().data]
        assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).usage.completion_tokens == 2
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in err, err


def test_gpts_serve_refuses_what_it_cannot_serve(tmp_path, monkeypatch, capsys):
    from helpers import run

    code, _, err = run(monkeypatch, capsys, "serve", "--model", str(tmp_path / "missing"))
    assert code == 1 and "No model named" in err
