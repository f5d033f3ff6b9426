"""The web page's addresses and files, served by the app (no browser: tests/web drives one)."""

import re
from pathlib import Path

import httpx2 as httpx

from gpts.server.app import ServerSettings, create_app
from gpts.server.routes.web import PAGES, WEB_DIR

KEY = "gpts-test-key-for-the-web-routes"


def test_every_page_address_answers_the_shell_without_a_key_while_the_api_needs_one(serve, tiny_model_path):
    url = serve(create_app(ServerSettings(models=[str(tiny_model_path)], api_keys=[KEY])))

    for path in [page.replace("{slug}", "larkspur-hr") for page in PAGES] + ["/?c=abc123&model=x"]:
        answer = httpx.get(url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in answer.text
        assert answer.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in answer.headers["content-security-policy"]  # the browser refuses elsewhere

    script = httpx.get(f"{url}/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{url}/v1/models").status_code == 401  # the page is open; the data behind it is not
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{url}/store/a/b").status_code == 401  # not a page: an unknown API path, behind the key
    assert httpx.get(f"{url}/static/missing.js").status_code == 404
    for escape in ("/static/../server/app.py", "/static/..%2fserver%2fapp.py", "/static/%2e%2e/server/app.py"):
        assert httpx.get(url + escape).status_code in (401, 404), escape  # never a file outside the page's folder


def test_every_file_the_page_names_is_in_the_package():
    """The shell's links and scripts, and every module a script imports, exist: a renamed file is a blank page."""
    named = re.findall(r'(?:href|src)="/static/([^"]+)"', (WEB_DIR / "index.html").read_text())
    for script in WEB_DIR.rglob("*.js"):
        for target in re.findall(r'(?:from|import\()\s*["`](\.{1,2}/[^"`$]+)["`]', script.read_text()):
            named.append(str((script.parent / target).resolve().relative_to(WEB_DIR)))
    assert "app.js" in named
    missing = [name for name in named if not (WEB_DIR / name).is_file()]
    assert not missing
    pages = {path.stem for path in (WEB_DIR / "pages").glob("*.js")}
    routed = set(re.findall(r'"(\w+)", "[\w-]+"\]', (WEB_DIR / "app.js").read_text()))
    assert routed <= pages, routed - pages


def test_the_page_loads_nothing_from_elsewhere():
    """No CDN: every URL in the page's files is the server's own (relative or /...)."""
    for path in WEB_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            external = re.findall(r'(?:src|href)=["\'](https?:)?//|@import\s+url\(["\']?https?:|import[^;]*["\']https?:',
                                  text)
            assert not external, Path(path).name
