"""Browser tests: Debian's chromium, driven by Playwright, against a real `gpts serve` on loopback with the bundled
model. Each test saves screenshots of its steps in build/screenshots/ (or $GPTS_SCREENSHOTS): the test artifacts.

Playwright's own browser download does not work offline: the tests launch the system's chromium
(`apt-get install chromium`; .ci/run installs it). Without it (or without playwright) they are skipped, unless
GPTS_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

CHROMIUM = os.environ.get("GPTS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("GPTS_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "build" / "screenshots")
START_TIMEOUT_S = 180
ACTION_TIMEOUT_MS = 30_000  # the bundled model answers a short question in a few seconds; a busy CI core is slower


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(item.fspath).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.web)


def _missing(what: str) -> None:
    if os.environ.get("GPTS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} (GPTS_REQUIRE_BROWSER=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def playwright_api():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    if not Path(CHROMIUM).exists():
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_api):
    browser = playwright_api.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory, bundled_gguf):
    """The base URL of `gpts serve` (the bundled model, its own user directory), running for the whole session."""
    with _serve(tmp_path_factory, "web") as url:
        yield url


@pytest.fixture(scope="module")
def another_server(tmp_path_factory, bundled_gguf):
    """another_server(name, *options): a context manager running one more `gpts serve --port 0 OPTIONS` with its
    own user directory; its base URL."""
    return lambda name, *options: _serve(tmp_path_factory, name, *options)


@pytest.fixture(scope="module")
def keyed_server(another_server):
    """(base URL, key) of a second `gpts serve --api-key KEY`, with its own user directory: every API call needs the
    key there, the pages themselves do not."""
    key = secrets.token_urlsafe(16)
    with another_server("web-keyed", "--api-key", key) as url:
        yield url, key


@contextmanager
def _serve(tmp_path_factory, name: str, *options: str) -> Iterator[str]:
    """Run `gpts serve --port 0 OPTIONS` in a new user directory until the block ends; its base URL once ready."""
    home = tmp_path_factory.mktemp(f"{name}-home")
    env = {**os.environ, "GPTS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path_factory.mktemp(f"{name}-log") / "serve.log").open("w+")
    process = subprocess.Popen([str(Path(sys.executable).parent / "gpts"), "serve", "--port", "0", *options], env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield _wait_until_ready(process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_until_ready(process: subprocess.Popen, log) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"gpts serve exited with {process.returncode}:\n{log.read()}")
        if url is None:
            log.seek(0)
            found = re.search(r"Open (http://127\.0\.0\.1:\d+)/ in a browser", log.read())
            url = found and found.group(1)
        elif httpx2.get(f"{url}/health").status_code == 200:
            return url
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"gpts serve was not ready in {START_TIMEOUT_S} s:\n{log.read()}")


@pytest.fixture
def page(browser, server):
    """A fresh tab (its own storage) on the server, desktop-sized."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def phone(browser, server):
    """A fresh tab 360 px wide, as a phone shows the page."""
    context = browser.new_context(base_url=server, viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shot(request):
    """shot(page, "step") saves build/screenshots/FILE-TEST-NN-step.png: each test's steps, in order."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    count = 0

    def take(page, step: str) -> Path:
        nonlocal count
        count += 1
        path = SCREENSHOTS / f"{Path(request.fspath).stem}-{request.node.name}-{count:02d}-{step}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take
