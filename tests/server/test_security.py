"""Keys, the bind check, body limits, malformed JSON and CORS, against a real server on a loopback port."""

import httpx2 as httpx
import openai
import pytest

from helpers import run

from gpts.errors import GptsError
from gpts.server.app import ServerSettings, create_app
from gpts.server.security import accepts_upload, check_bind, create_key, list_keys, revoke_key

KEY = "gpts-test-key-given-on-the-command-line"


def settings(tiny_model_path, **fields) -> ServerSettings:
    return ServerSettings(models=[str(tiny_model_path)], **fields)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_needed_on_every_route_but_health(serve, tiny_model_path):
    url = serve(create_app(settings(tiny_model_path, api_keys=[KEY])))

    missing = httpx.get(f"{url}/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    error = missing.json()["error"]
    assert error["type"] == "invalid_request_error" and "Authorization: Bearer" in error["message"]

    for headers in (bearer("gpts-wrong"), bearer(KEY + "x"), {"Authorization": KEY}):  # the last: no Bearer
        wrong = httpx.get(f"{url}/metrics", headers=headers)
        assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] is None  # a key that is not a bearer token is a missing key
    assert httpx.get(f"{url}/metrics", headers=bearer("gpts-wrong")).json()["error"]["code"] == "invalid_api_key"

    assert httpx.get(f"{url}/health").status_code != 401
    assert httpx.get(f"{url}/metrics", headers=bearer(KEY)).status_code == 200
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"bearer  {KEY}"}).status_code == 200

    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=f"{url}/v1", api_key="gpts-wrong", max_retries=0).models.list()
    assert refused.value.code == "invalid_api_key"


def test_keys_from_the_store_count_at_once_and_a_revoked_key_is_refused(serve, tiny_model_path):
    url = serve(create_app(settings(tiny_model_path)))
    assert httpx.get(f"{url}/metrics").status_code == 200  # no key anywhere: a loopback server is open

    made, key = create_key("ci")
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers=bearer(key[:-1])).status_code == 401
    assert httpx.get(f"{url}/metrics", headers=bearer(key)).status_code == 200
    (listed,) = list_keys()
    assert listed.name == made.name and listed.last_used_at is not None

    revoke_key("ci")
    refused = httpx.get(f"{url}/metrics", headers=bearer(key))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    # Keys stay required once there were some: revoking the last one locks the server, never opens it.
    assert httpx.get(f"{url}/metrics").status_code == 401


def test_a_server_without_keys_serves_loopback_only():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(host, [])
    for host in ("0.0.0.0", "::", "192.168.1.20", "gpts.example.com", ""):
        with pytest.raises(GptsError, match="without an API key") as refused:
            check_bind(host, [])
        assert "gpts keys create" in refused.value.fix
    check_bind("0.0.0.0", [KEY])
    with pytest.raises(GptsError, match="cannot be empty"):
        check_bind("0.0.0.0", [" "])
    create_key()
    check_bind("0.0.0.0", [])


def test_gpts_serve_refuses_another_address_without_a_key(monkeypatch, capsys, tiny_model_path):
    code, _, stderr = run(monkeypatch, capsys, "serve", "--host", "0.0.0.0", "--model", str(tiny_model_path))
    assert code == 1 and "Refusing to serve on 0.0.0.0 without an API key" in stderr


def _upload_app(tiny_model_path):
    """The app with a route that takes uploads: it answers how many bytes it read."""
    from fastapi import Request

    app = create_app(settings(tiny_model_path, max_body_bytes=1000, max_upload_bytes=5000))

    @app.post("/test/upload")
    @accepts_upload
    async def upload(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    return app


def _chunks(size: int):
    """A body sent chunked (no Content-Length), in pieces of 500 bytes."""
    for start in range(0, size, 500):
        yield b"x" * min(500, size - start)


def test_an_oversized_body_is_refused_with_or_without_content_length(serve, tiny_model_path):
    url = serve(_upload_app(tiny_model_path))
    chat = f"{url}/v1/chat/completions"

    for body in (b"{" + b" " * 2000 + b"}", _chunks(2000)):
        refused = httpx.post(chat, content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 413
        assert "1,000 bytes at most" in refused.json()["error"]["message"]
    if_small = httpx.post(chat, content=b"{" + b" " * 900 + b"}", headers={"Content-Type": "application/json"})
    assert if_small.status_code == 400  # read and parsed: the messages are missing

    assert httpx.post(f"{url}/test/upload", content=b"x" * 4000).json() == {"read": 4000}
    assert httpx.post(f"{url}/test/upload", content=_chunks(4000)).json() == {"read": 4000}
    for body in (b"x" * 6000, _chunks(6000)):
        refused = httpx.post(f"{url}/test/upload", content=body)
        assert refused.status_code == 413 and "5,000 bytes at most" in refused.json()["error"]["message"]


def test_malformed_json_is_a_400(serve, tiny_model_path):
    url = serve(create_app(settings(tiny_model_path)))
    answer = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "tiny", "messages": [',
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == {"message": "The request body is not valid JSON.",
                                      "type": "invalid_request_error", "param": None, "code": "invalid_json"}


def test_cors_headers_only_for_the_origins_given(serve, tiny_model_path):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}

    closed = serve(create_app(settings(tiny_model_path)))
    assert "access-control-allow-origin" not in httpx.options(f"{closed}/v1/chat/completions",
                                                              headers=preflight).headers
    assert "access-control-allow-origin" not in httpx.get(f"{closed}/metrics", headers=preflight).headers

    opened = serve(create_app(settings(tiny_model_path, api_keys=[KEY], cors_origins=["http://app.example"])))
    allowed = httpx.options(f"{opened}/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 200  # a preflight carries no key
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.get(f"{opened}/metrics", headers={"Origin": "http://app.example"})
    assert refused.status_code == 401  # and the page can read why
    assert refused.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(f"{opened}/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
