"""Scale-out on one machine: several servers on one store (SQLite in WAL mode) behind any HTTP load balancer see
the same GPTs, files, keys and conversations, whichever of them a request reaches."""

import httpx2 as httpx
from openai import OpenAI

from gpts.server.app import ServerSettings, create_app
from gpts.server.security import create_key


def test_two_servers_share_one_store(serve, tiny_model_path, tmp_path):
    _, key = create_key("team")
    a, b = (serve(create_app(ServerSettings(models=[str(tiny_model_path)]))) for _ in range(2))
    headers = {"Authorization": f"Bearer {key}"}
    spec = {"name": "Shared helper", "slug": "shared-helper", "instructions": "Be brief.",
            "model": str(tiny_model_path)}
    with httpx.Client(base_url=a, headers=headers, timeout=60) as on_a, \
            httpx.Client(base_url=b, headers=headers, timeout=60) as on_b:
        assert on_a.post("/v1/gpts", json=spec).status_code == 200
        assert on_b.get("/v1/gpts/shared-helper").json()["spec"]["name"] == "Shared helper"
        assert "shared-helper" in [m["id"] for m in on_b.get("/v1/models").json()["data"]]
        data = tmp_path / "train.jsonl"
        data.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n')
        uploaded = OpenAI(base_url=f"{a}/v1", api_key=key).files.create(file=data.open("rb"), purpose="fine-tune")
        assert OpenAI(base_url=f"{b}/v1", api_key=key).files.retrieve(uploaded.id).filename == "train.jsonl"
        reply = OpenAI(base_url=f"{b}/v1", api_key=key).chat.completions.create(
            model="shared-helper", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert on_a.delete("/v1/gpts/shared-helper").status_code == 200
        assert on_b.get("/v1/gpts/shared-helper").status_code == 404
        assert on_b.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
