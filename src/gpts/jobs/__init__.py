"""Uploaded files and fine-tuning jobs, as OpenAI's Files and Fine-tuning APIs have them, for `gpts serve`.

    uploads.py      files uploaded for fine-tuning: a copy in the store directory named by its id, a row in the store
    fine_tuning.py  jobs, their events and checkpoints; the fine-tuned models they made (`fine_tuned_models`)
    runner.py       the server's job runner: a thread that validates, queues and starts jobs, and resumes those a
                    stopped server left running
    worker.py       a job's worker process (`python -m gpts.jobs run JOB_ID`): gpts.finetune, and its progress
                    into the store
    common.py       ids, times and pagination as OpenAI has them

Only the worker process imports torch: the server lists, creates and cancels jobs without it.
"""

from gpts.jobs.fine_tuning import (Checkpoint, Event, FineTunedModel, Job, JobFileError, cancel_job,
                                   create_job, fine_tuned_models, get_job, list_checkpoints, list_events, list_jobs)
from gpts.jobs.runner import JobRunner
from gpts.jobs.uploads import FINE_TUNE, Upload, add_upload, delete_upload, get_upload, list_uploads

__all__ = [
    "FINE_TUNE", "Checkpoint", "Event", "FineTunedModel", "Job", "JobFileError", "JobRunner", "Upload",
    "add_upload", "cancel_job", "create_job", "delete_upload",
    "fine_tuned_models", "get_job", "get_upload", "list_checkpoints", "list_events", "list_jobs", "list_uploads",
]
