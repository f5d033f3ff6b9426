"""OpenAI's Fine-tuning jobs API (gpts.jobs): jobs run one at a time in a worker process, kept in the store.

    POST /v1/fine_tuning/jobs                   {"model", "training_file", "validation_file", "hyperparameters" or
                                                "method": {"type": "supervised", "supervised": {"hyperparameters"}},
                                                "suffix", "seed"}
    GET  /v1/fine_tuning/jobs                   ?after=ID&limit=N, newest first
    GET  /v1/fine_tuning/jobs/{id}
    POST /v1/fine_tuning/jobs/{id}/cancel
    GET  /v1/fine_tuning/jobs/{id}/events       ?after=ID&limit=N, newest first; a "metrics" event per step
    GET  /v1/fine_tuning/jobs/{id}/checkpoints  ?after=ID&limit=N, one per epoch, newest first

`model` is a model this server serves (GET /v1/models), a fine-tuned one included; the job's model is then served as
ft:BASE:SUFFIX:ID. The app's lifespan starts the job runner (`start_job_runner`) and stops it (`stop_job_runner`),
leaving running jobs to resume at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import closing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from gpts.events import Event, Message
from gpts.jobs import (JobFileError, JobRunner, cancel_job, create_job, fine_tuned_models, get_job, list_checkpoints,
                       list_events, list_jobs)
from gpts.server.errors import bad_request, from_gpts_error
from gpts.server.protocol import Hyperparameters
from gpts.server.routes.files import page_body
from gpts.server.routes.store import Store
from gpts.store.db import connect

log = logging.getLogger("gpts.server")
router = APIRouter()


class Supervised(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised"]  # dpo and reinforcement fine-tuning are not gpts's
    supervised: Supervised | None = None


class CreateJob(BaseModel):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None  # OpenAI's older place for them
    method: Method | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None

    def chosen_hyperparameters(self) -> dict[str, Any]:
        inside = self.method.supervised.hyperparameters if self.method and self.method.supervised else None
        if inside and self.hyperparameters and inside != self.hyperparameters:
            raise bad_request("hyperparameters and method.supervised.hyperparameters differ.",
                              "hyperparameters", "invalid_value")
        return (inside or self.hyperparameters or Hyperparameters()).model_dump()


def _wake_runner(request: Request) -> None:
    """A job was created or cancelled: the runner acts on it now rather than at its next tick."""
    if runner := getattr(request.app.state, "job_runner", None):
        runner.wake()


@router.post("/v1/fine_tuning/jobs")
def create(body: CreateJob, request: Request, conn: Store) -> dict[str, Any]:
    hyperparameters = body.chosen_hyperparameters()
    entry = request.app.state.serving.entry(body.model)  # a 404 for a model this server does not serve
    if entry.gpt is not None:
        raise bad_request(f"{body.model!r} is a custom GPT, not a model: fine-tune the model it is built on "
                          f"({entry.ref}), or tune the GPT on its examples with `gpts tune {body.model}`.", "model")
    try:
        job = create_job(conn, body.model, entry.ref, body.training_file, body.validation_file, hyperparameters,
                         body.suffix, body.seed)
    except JobFileError as e:
        raise from_gpts_error(e, e.param) from None
    _wake_runner(request)
    return job.to_dict()


@router.get("/v1/fine_tuning/jobs")
def list_(request: Request, conn: Store, after: str | None = None,
          limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    jobs, more = list_jobs(conn, after, limit)
    serve_fine_tuned_models(request.app, conn)
    return page_body([j.to_dict() for j in jobs], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve(job_id: str, request: Request, conn: Store) -> dict[str, Any]:
    job = get_job(conn, job_id)
    serve_fine_tuned_models(request.app, conn)
    return job.to_dict()


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, conn: Store) -> dict[str, Any]:
    job = cancel_job(conn, job_id)
    _wake_runner(request)
    return job.to_dict()


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def events(job_id: str, conn: Store, after: str | None = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    found, more = list_events(conn, job_id, after, limit)
    return page_body([e.to_dict() for e in found], more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def checkpoints(job_id: str, conn: Store, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
    found, more = list_checkpoints(conn, job_id, after, limit)
    return page_body([c.to_dict() for c in found], more)


# -- the runner and the models it makes ---------------------------------------------------------------------------


def _log(event: Event) -> None:
    if isinstance(event, Message):
        log.warning("%s", event.text)


def serve_fine_tuned_models(app: FastAPI, conn: sqlite3.Connection) -> None:
    """Serve every model the jobs have made that the serving layer does not know yet. Called before a job is shown,
    so a client that sees a job succeeded finds its model, and at each tick of the runner, for the models of jobs
    that nobody looks at (or that another server sharing the store ran)."""
    serving = app.state.serving
    for model in fine_tuned_models(conn):
        if model.id not in serving.registered:
            serving.register(model.id, model.ref, "user", model.created_at, model.parent)


def start_job_runner(app: FastAPI) -> None:
    """At startup (the app's lifespan, after the serving layer): run the store's fine-tuning jobs, and resume those
    that a stopped server left running."""
    with closing(connect()) as conn:
        serve_fine_tuned_models(app, conn)
    app.state.job_runner = JobRunner(report=_log, on_tick=lambda conn: serve_fine_tuned_models(app, conn)).start()


async def stop_job_runner(app: FastAPI) -> None:
    """At shutdown: the workers stop at their next step with a checkpoint, and their jobs resume at the next start."""
    if runner := getattr(app.state, "job_runner", None):
        await asyncio.to_thread(runner.stop)
