"""The application: settings, the routers, middleware and the lifespan that loads models and starts workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gpts.server.errors import install_handlers
from gpts.server.metrics import Metrics, Observe
from gpts.server.routes import files, fine_tuning, models, openai, ops, store, web
from gpts.server.security import BodyLimit, KeyRing, RequireKey

ROUTERS = [ops.router, openai.router, files.router, fine_tuning.router, store.router, models.router]


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = field(default_factory=list)  # model references; empty: the bundled model
    api_keys: list[str] = field(default_factory=list)  # besides the keys in the store (gpts keys)
    max_batch: int | None = None  # the engine's slots; None: its default
    max_queue: int | None = None  # requests waiting for a slot, per model; one more is a 429; None: the default
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 2 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    app = FastAPI(title="gpts", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics(app)
    install_handlers(app)
    add_middleware(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    web.mount(app)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The serving layer starts loading the models and the server answers at once (/health says when they are
    in); on shutdown the engines finish what runs."""
    from gpts.server.serving import Serving

    settings = app.state.settings
    serving = app.state.serving = Serving(settings.models, settings.max_batch, settings.max_queue)
    serving.start()
    fine_tuning.start_job_runner(app)
    try:
        yield
    finally:
        await fine_tuning.stop_job_runner(app)
        await serving.close()


def add_middleware(app: FastAPI, settings: ServerSettings) -> None:
    """Each added one wraps those before it. From the outside in: the access log and metrics see every answer,
    refusals included; CORS headers go on refusals too, so a browser can read them; a request's key is checked
    before its body is read."""
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    app.add_middleware(RequireKey, keys=KeyRing(settings.api_keys), is_open=web.is_page)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Retry-After"])
    app.add_middleware(Observe, metrics=app.state.metrics, routes=[r for router in ROUTERS for r in router.routes])
