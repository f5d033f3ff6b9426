"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the right HTTP status.

Routes and the serving layer raise `ApiError` (or a GptsError, which is a 400 with its fix in the message: a 404
when it is a NotFoundError, a 409 when a ConflictError, naming the field of an invalid spec as `param`); the
handlers installed by `install_handlers` turn every failure, FastAPI's validation errors included, into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpts.errors import ConflictError, ContextTooLong, GptsError, LinesError, NotFoundError
from gpts.spec import SpecError

log = logging.getLogger("gpts.server")

# OpenAI's `type` for each status we send.
TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
         415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
         503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.details = details  # more fields of the error object, beyond OpenAI's (a refused file's lines)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(404, message, param, code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code, **(details or {})}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.status, error.message, error.param, error.code, error.details),
                        status_code=error.status, headers=error.headers)


def from_gpts_error(e: GptsError, param: str | None = None) -> ApiError:
    status = 404 if isinstance(e, NotFoundError) else 409 if isinstance(e, ConflictError) else 400
    if param is None and isinstance(e, SpecError):
        param = e.field
    code = "context_length_exceeded" if isinstance(e, ContextTooLong) else None
    details = {"errors": e.problems, "example_line": e.example_line} if isinstance(e, LinesError) else None
    return ApiError(status, f"{e.problem} {e.fix}".strip(), param, code, details=details)


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(where) or None
    if first.get("type") == "json_invalid":
        return bad_request("The request body is not valid JSON.", None, "invalid_json")
    message = first.get("msg", "Invalid request.")
    return bad_request(f"Invalid value for '{param}': {message}." if param else f"{message}.", param,
                       "invalid_value")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(GptsError)
    async def _gpts(_: Request, exc: GptsError) -> JSONResponse:
        return error_response(from_gpts_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error."
        return error_response(ApiError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(ApiError(500, f"Internal error: {type(exc).__name__}. The server log has the details."))
