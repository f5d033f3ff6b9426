"""`gpts serve`: the OpenAI-compatible API (gpts.server) on uvicorn, for the models given and every GPT in the store."""

from __future__ import annotations

import signal
import socket
import sys
from typing import Annotated, Optional

import typer

from gpts.cli.common import print_plain
from gpts.errors import GptsError
from gpts.terminal import err

SHUTDOWN_GRACE_S = 30
GIL_SWITCH_S = 0.0002

def serve(host: Annotated[str, typer.Option(help="The address to listen on. Beyond this machine it needs an API key "
                                                 "(--api-key or `gpts keys create`).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=0, max=65535, help="The port (0: any free one).")] = 8000,
          model: Annotated[Optional[list[str]], typer.Option(
              "--model", "-m", help="A model to serve (repeatable): a name, a path or hf:ORG/NAME. Default: the "
                                    "bundled model. The store's GPTs are served too, on their own models.")] = None,
          api_key: Annotated[Optional[list[str]], typer.Option(
              help="A key clients must send as a bearer token (repeatable), besides those of `gpts keys`.")] = None,
          max_batch: Annotated[Optional[int], typer.Option(
              min=1, help="Sequences each model decodes together (default: the engine's).")] = None,
          max_queue: Annotated[Optional[int], typer.Option(
              min=1, help="Requests that wait for a free slot, per model; one more is refused (429).")] = None,
          cors_origin: Annotated[Optional[list[str]], typer.Option(
              help="A web origin allowed to call the API from a browser (repeatable); none by default.")] = None,
          ) -> None:
    """Serve the web page (http://HOST:PORT/), OpenAI's API (/v1/models, /v1/chat/completions, /v1/completions,
    files, fine-tuning) and the store's. Point the official `openai` client at http://HOST:PORT/v1."""
    import uvicorn

    from gpts.cli.store import ensure_ready_gpts
    from gpts.server.app import ServerSettings, create_app
    from gpts.server.metrics import log_config
    from gpts.server.security import check_bind
    from gpts.server.serving import served_models
    from gpts.store import list_gpts

    settings = ServerSettings(host=host, port=port, models=model or [], api_keys=api_key or [], max_batch=max_batch,
                              max_queue=max_queue, cors_origins=cors_origin or [])
    models = served_models(settings.models)  # a reference that names nothing is an error now, not in the log
    check_bind(settings.host, settings.api_keys)
    ensure_ready_gpts()
    listening = _bind(host, port)
    settings.port = listening.getsockname()[1]
    app = create_app(settings)
    url_host = f"[{host}]" if ":" in host else host
    print_plain(f"Open http://{url_host}:{settings.port}/ in a browser: chat, the store, the GPT builder, "
                "fine-tuning, models.")
    print_plain(f"OpenAI's API: http://{url_host}:{settings.port}/v1")
    print_plain(f"Models: {', '.join(models)}")
    gpts = [g.slug for g in list_gpts()]
    if gpts:
        print_plain(f"GPTs: {', '.join(sorted(gpts))}")
    err.print("Models load in the background; /health answers 200 once they are in. Ctrl-C stops.", style="dim")
    # uvicorn stops gracefully on SIGTERM (running streams finish), then raises the signal again for the handler
    # it found: this one makes that a clean exit, status 0, as service managers expect of a requested stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # The engine thread dispatches a few hundred tensor operations per step, each needing the GIL back from the
    # event loop's thread: Python's default 5 ms switch interval cost a third of the throughput at 8 clients
    # (bench/serve.py: 38.8 -> 49.2 tokens/s at 0.2 ms, and 11.9 -> 14.9 at one client).
    sys.setswitchinterval(GIL_SWITCH_S)
    # Running streams get SHUTDOWN_GRACE_S to finish; then uvicorn cancels them, which aborts their engine requests.
    config = uvicorn.Config(app, log_config=log_config(), log_level="info", access_log=False,  # ours: JSON lines
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    uvicorn.Server(config).run(sockets=[listening])


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, opened here so that a port in use is a clear error and port 0 tells which it got."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise GptsError(f"Cannot listen on {host}: {e.strerror or e}.", "Check the --host address.") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise GptsError(f"Cannot listen on {host}:{port}: {e.strerror or e}.",
                        "Pick another --port (0 picks a free one), or stop what holds this one.") from e
    return sock
