"""GET /v1/model_details (the web page's Models page) on a real uvicorn server on loopback: the served models, loaded
or not, and the installed ones it does not serve."""

import shutil

import httpx2 as httpx
import pytest

from gpts.server.app import ServerSettings, create_app
from gpts.tokenizer import CHATML_TEMPLATE

DESCRIBED = {"id", "kind", "served", "loaded", "source", "format", "size_bytes", "parameters", "architecture",
             "context_length", "chat_template"}


def details(api) -> dict:
    response = api.get("/v1/model_details")
    assert response.status_code == 200, response.text
    listed = response.json()
    assert listed["object"] == "list" and all(set(m) == DESCRIBED for m in listed["data"])
    return {m["id"]: m for m in listed["data"]}


def files_size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_served_models_are_described_loaded_or_not(serve, tiny_model_path, tmp_path):
    app = create_app(ServerSettings(models=[str(tiny_model_path)]))
    with httpx.Client(base_url=serve(app), timeout=60) as api:
        assert api.post("/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 1}).is_success
        tuned = shutil.copytree(tiny_model_path, tmp_path / "tuned")
        app.state.serving.register("ft:tiny:demo:1", str(tuned), parent="tiny")  # as a fine-tuning job's model

        models = details(api)
        tiny, fine_tuned = models["tiny"], models["ft:tiny:demo:1"]
        assert {k: tiny[k] for k in ("kind", "served", "loaded", "format", "architecture", "context_length")} == {
            "kind": "base", "served": True, "loaded": True, "format": "native", "architecture": "llama",
            "context_length": 128}
        assert tiny["size_bytes"] == files_size(tiny_model_path) and tiny["source"].startswith("gpts checkpoint")
        assert tiny["chat_template"] == CHATML_TEMPLATE  # the tiny model has none of its own: gpts' ChatML
        assert tiny["parameters"] == app.state.serving.loaded(str(tiny_model_path)).gpt.num_params()
        # Not loaded yet: read from its files, to the same figures.
        assert {k: fine_tuned[k] for k in ("kind", "served", "loaded")} == {"kind": "fine-tuned", "served": True,
                                                                            "loaded": False}
        assert {k: fine_tuned[k] for k in ("parameters", "architecture", "context_length", "chat_template")} == {
            k: tiny[k] for k in ("parameters", "architecture", "context_length", "chat_template")}

        assert api.post("/v1/completions", json={"model": "ft:tiny:demo:1", "prompt": "hi", "max_tokens": 1}).is_success
        assert details(api)["ft:tiny:demo:1"]["loaded"] is True


def test_installed_models_that_are_not_served_are_listed(serve, tiny_model_path, bundled_gguf):
    with httpx.Client(base_url=serve(create_app(ServerSettings(models=[str(tiny_model_path)]))), timeout=120) as api:
        models = details(api)
    assert list(models) == ["tiny", "smollm2-135m-instruct"]
    smollm2 = models["smollm2-135m-instruct"]
    assert {k: smollm2[k] for k in ("kind", "served", "loaded", "format", "size_bytes", "architecture",
                                    "context_length")} == {
        "kind": "installed", "served": False, "loaded": False, "format": "bundled",
        "size_bytes": bundled_gguf.stat().st_size, "architecture": "llama", "context_length": 8192}
    assert 130e6 < smollm2["parameters"] < 140e6 and "<|im_start|>" in smollm2["chat_template"]


@pytest.mark.slow  # the server loads the bundled model (converted anew in each test's GPTS_HOME)
def test_the_bundled_model_served_by_its_alias_is_not_listed_twice(serve, bundled_gguf):
    with httpx.Client(base_url=serve(create_app(ServerSettings(models=["default"]))), timeout=120) as api:
        models = details(api)
    assert [(m["id"], m["kind"]) for m in models.values()] == [("smollm2-135m-instruct", "base")]
