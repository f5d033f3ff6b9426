"""Fixtures for the server's tests: a real uvicorn server on a free loopback port, in this process."""

from contextlib import ExitStack

import pytest

from helpers import running


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
