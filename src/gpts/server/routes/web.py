"""The web page: every page's address answers the same shell (index.html), whose scripts draw the page and use the
API like any other client; /static/ serves the page's files (src/gpts/web), shipped in the package, nothing fetched
from elsewhere. Neither needs a key: the page asks for one when the API answers 401.

    /                    chat (?c=CONVERSATION, ?model=ID)
    /store               the store: search, categories, featured, trending
    /store/{slug}        one GPT: its page, versions, rating, export
    /builder[/{slug}]    a new GPT, or a new version of one
    /fine-tuning         files and fine-tuning jobs
    /models              the models this server has
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC = "/static"
PAGES = ("/", "/store", "/store/{slug}", "/builder", "/builder/{slug}", "/fine-tuning", "/models")
_PAGE = re.compile("|".join(re.sub(r"\{\w+\}", "[^/]+", page) for page in PAGES))
_NOT_STORED = {"Cache-Control": "no-cache"}  # a new gpts version's page shows at the next load
# The browser holds the page to its promise: nothing from elsewhere (no CDN, no fonts, no beacons), no framing by
# another site. Inline style attributes stay allowed: the chart sets its colours through them.
_SHELL_HEADERS = {**_NOT_STORED, "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"}

router = APIRouter(include_in_schema=False)


def _shell() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers=_SHELL_HEADERS)


for _path in PAGES:
    router.add_api_route(_path, _shell, methods=["GET"])


class _Static(StaticFiles):
    """The page's files, revalidated on each load (cheap: an ETag), so that an upgrade is never half seen."""

    def file_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(_NOT_STORED)
        return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC, _Static(directory=WEB_DIR), name="static")


def is_page(path: str) -> bool:
    """Whether `path` is the page or one of its files, which anyone may load."""
    return path.startswith(STATIC + "/") or _PAGE.fullmatch(path) is not None
