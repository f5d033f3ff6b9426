"""Fixtures for the server's tests: a real uvicorn server on a free loopback port, in this process."""

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` with uvicorn (lifespan included) until the block ends: its base URL, http://127.0.0.1:PORT."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start (its error is in the log above)")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture
def serve():
    """serve(app) -> base URL: each app runs on its own loopback port until the test ends."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(running(app))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A random llama-nano checkpoint (helpers.tiny_model): a model that loads in a moment, for servers whose tests
    are not about its answers."""
    from helpers import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")
