"""OpenAI's Files API, for fine-tuning: the files live in the store (gpts.jobs.uploads).

    POST   /v1/files                 multipart: `file`, `purpose` ("fine-tune"); a file with bad lines is a 400 that
                                     names them
    GET    /v1/files                 ?purpose=, ?after=ID, ?limit= (10,000 at most), ?order=asc|desc (newest first)
    GET    /v1/files/{id}
    GET    /v1/files/{id}/content
    DELETE /v1/files/{id}            a 409 while a job that has not ended uses it
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from gpts.errors import GptsError
from gpts.jobs import FINE_TUNE, add_upload, delete_upload, get_upload, list_uploads
from gpts.server.errors import bad_request, from_gpts_error
from gpts.server.routes.store import Store
from gpts.server.security import accepts_upload

router = APIRouter()


def page_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object with cursor pagination: the next page starts after `last_id`."""
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.post("/v1/files")
@accepts_upload
def upload(conn: Store, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> dict[str, Any]:
    if purpose != FINE_TUNE:
        raise bad_request(f"purpose {purpose!r} is not one this server takes: it keeps files for fine-tuning "
                          f"(purpose {FINE_TUNE!r}).", "purpose", "invalid_value")
    try:
        return add_upload(conn, file.file, file.filename or "upload", purpose).to_dict()
    except GptsError as e:  # what is wrong is in the file: empty, or lines that are not fine-tuning examples
        raise from_gpts_error(e, "file") from e


@router.get("/v1/files")
def list_(conn: Store, purpose: str | None = None, after: str | None = None,
          limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
          order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
    uploads, more = list_uploads(conn, purpose, after, limit, order)
    return page_body([u.to_dict() for u in uploads], more)


@router.get("/v1/files/{file_id}")
def retrieve(file_id: str, conn: Store) -> dict[str, Any]:
    return get_upload(conn, file_id).to_dict()


@router.get("/v1/files/{file_id}/content")
def content(file_id: str, conn: Store) -> FileResponse:
    upload = get_upload(conn, file_id)
    return FileResponse(upload.path, media_type="application/octet-stream", filename=upload.filename)


@router.delete("/v1/files/{file_id}")
def delete(file_id: str, conn: Store) -> dict[str, Any]:
    delete_upload(conn, file_id)
    return {"object": "file", "id": file_id, "deleted": True}
