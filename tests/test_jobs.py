"""gpts.jobs without a server: the job records and their changes, pages, model names, what the worker reads of a run,
the runner's validation, and that the server side never imports torch. (tests/server/test_fine_tuning.py runs
jobs through the API with the real worker process.)"""

import io
import json
import subprocess
import sys
import time
from contextlib import closing

import pytest

from gpts.errors import ConflictError, GptsError, NotFoundError
from gpts.events import Message
from gpts.interrupt import StopRequest
from gpts.jobs import (JobFileError, JobRunner, add_upload, cancel_job, create_job, delete_upload, fine_tuned_models,
                       get_job, list_checkpoints, list_events, list_jobs)
from gpts.jobs.fine_tuning import move, run_dir
from gpts.jobs.uploads import upload_path
from gpts.jobs.worker import JobReport
from gpts.store.db import connect

LINE = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'


@pytest.fixture
def conn():
    with closing(connect()) as conn:
        yield conn


@pytest.fixture
def training(conn) -> str:
    return add_upload(conn, io.BytesIO(LINE * 10), "train.jsonl", "fine-tune").id


@pytest.fixture
def base(tmp_path, monkeypatch) -> str:
    """A model reference, relative to the working directory (a file that starts as GGUF does is one to gpts.refs)."""
    (tmp_path / "base.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    return "base.gguf"


def new_job(conn, training, model="smollm2-135m-instruct", **fields):
    return create_job(conn, model, "base.gguf", training, **fields)


def messages(conn, job_id) -> list[str]:
    return [e.message for e in reversed(list_events(conn, job_id, limit=100)[0])]


@pytest.mark.usefixtures("base")
def test_models_are_named_as_openai_names_them(conn, training, tmp_path):
    job = new_job(conn, training, suffix="my-suffix")
    short = job.id.removeprefix("ftjob-")[:8]
    assert job.model_name == f"ft:smollm2-135m-instruct:my-suffix:{short}"
    assert new_job(conn, training).model_name.startswith("ft:smollm2-135m-instruct::")
    for model, base in ((str(tmp_path / "runs" / "tiny"), "tiny"), ("/models/a.gguf", "a"),
                        ("hf:HuggingFaceTB/SmolLM2-135M@main", "SmolLM2-135M"),
                        ("ft:smollm2-135m-instruct:x:abcdefgh", "smollm2-135m-instruct")):
        assert new_job(conn, training, model).model_name.startswith(f"ft:{base}::")


def test_a_job_is_created_validating_with_its_files_checked(conn, training, base, tmp_path):
    job = new_job(conn, training, hyperparameters={"n_epochs": 2}, seed=3)
    assert job.base_ref == str(tmp_path / "base.gguf")  # a worker started elsewhere finds it
    assert (job.status, job.seed, job.runner, job.fine_tuned_model) == ("validating_files", 3, None, None)
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert messages(conn, job.id) == [f"Created fine-tuning job: {job.id}", f"Validating training file: {training}"]
    assert new_job(conn, training).seed != new_job(conn, training).seed  # drawn, and kept

    results = add_upload(conn, io.BytesIO(b"step\n1\n"), "step_metrics.csv", "fine-tune-results").id
    for file_id, param, said in (("file-nope", "training_file", "No file with id 'file-nope'"),
                                 (results, "training_file", "purpose 'fine-tune-results'")):
        with pytest.raises(JobFileError, match=said) as refused:
            new_job(conn, file_id)
        assert refused.value.param == param
    with pytest.raises(JobFileError) as refused:
        new_job(conn, training, validation_file="file-nope")
    assert refused.value.param == "validation_file"
    with pytest.raises(GptsError, match="No model named"):
        create_job(conn, "gone", str(tmp_path / "gone"), training)


@pytest.mark.usefixtures("base")
def test_a_cancel_racing_the_end_of_a_job_leaves_one_of_them(conn, training):
    job = new_job(conn, training)
    assert move(conn, job.id, "validating_files", "queued", "queued")
    assert move(conn, job.id, "queued", "running", "Fine-tuning job started", runner="1:token")
    assert get_job(conn, job.id).runner == "1:token"
    cancelled = cancel_job(conn, job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert not move(conn, job.id, "running", "succeeded", "done", fine_tuned_model=job.model_name)
    assert get_job(conn, job.id).fine_tuned_model is None and fine_tuned_models(conn) == []
    with pytest.raises(ConflictError, match="nothing to cancel"):
        cancel_job(conn, job.id)

    other = new_job(conn, training)
    with pytest.raises(ConflictError, match="which is validating_files"):  # a job that has not ended needs its file
        delete_upload(conn, training)
    cancel_job(conn, other.id)
    delete_upload(conn, training)
    assert not upload_path(training).exists()


@pytest.mark.usefixtures("base")
def test_succeeded_jobs_are_the_fine_tuned_models(conn, training):
    first, second = new_job(conn, training, suffix="a"), new_job(conn, training)
    for job in (first, second):
        move(conn, job.id, "validating_files", "queued", "queued")
        move(conn, job.id, "queued", "running", "started")
    move(conn, second.id, "running", "succeeded", "done", fine_tuned_model=second.model_name)
    (model,) = fine_tuned_models(conn)
    assert (model.id, model.ref, model.parent) == (second.model_name, str(run_dir(second.id)), "smollm2-135m-instruct")
    assert model.created_at == get_job(conn, second.id).finished_at


@pytest.mark.usefixtures("base")
def test_lists_page_newest_first(conn, training):
    jobs = [new_job(conn, training) for _ in range(3)]
    page, more = list_jobs(conn, limit=2)
    assert [j.id for j in page] == [jobs[2].id, jobs[1].id] and more
    page, more = list_jobs(conn, after=jobs[1].id, limit=2)
    assert [j.id for j in page] == [jobs[0].id] and not more
    with pytest.raises(GptsError, match="after='ftjob-nope' is not the id of a fine-tuning job"):
        list_jobs(conn, after="ftjob-nope")
    with pytest.raises(NotFoundError):
        list_events(conn, "ftjob-nope")


@pytest.mark.usefixtures("base")
def test_the_worker_records_each_step_once_as_metrics_and_each_epoch_as_a_checkpoint(conn, training):
    job = new_job(conn, training)
    run = run_dir(job.id)
    run.mkdir(parents=True)
    rows = [{"step": 1, "train_loss": 2.5, "train_mean_token_accuracy": 0.1, "elapsed_s": 0.1},
            {"step": 2, "train_loss": 2.0, "train_mean_token_accuracy": 0.2, "valid_loss": 2.2, "epoch": 1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "tra')
    report = JobReport(conn, job, after_step=0, stop=StopRequest())
    report.total_steps = 4
    report.record_steps()
    report.record_steps()  # nothing new: nothing recorded twice
    metrics = [e for e in reversed(list_events(conn, job.id, limit=100)[0]) if e.type == "metrics"]
    assert [e.message for e in metrics] == ["Step 1/4: training loss=2.5000",
                                            "Step 2/4: training loss=2.0000, validation loss=2.2000"]
    assert metrics[1].data == {"step": 2, "train_loss": 2.0, "train_mean_token_accuracy": 0.2, "valid_loss": 2.2,
                               "total_steps": 4}
    (checkpoint,) = list_checkpoints(conn, job.id)[0]
    assert checkpoint.step == 2 and checkpoint.metrics["valid_loss"] == 2.2

    with open(run / "metrics.jsonl", "a") as f:  # the half-written line is whole now
        f.write('in_loss": 1.5}\n')
    report.record_steps()
    assert [e.data["step"] for e in list_events(conn, job.id)[0] if e.type == "metrics"] == [3, 2, 1]


@pytest.mark.usefixtures("base")
def test_the_workers_messages_call_the_jobs_files_by_their_ids(conn, training):
    """finetune warns about the file it reads, a path in the server's store: the job's events say the file's id."""
    job = new_job(conn, training)
    JobReport(conn, job, after_step=0, stop=StopRequest())(Message(f"{upload_path(training)} has only 10 examples."))
    assert messages(conn, job.id)[-1] == f"{training} has only 10 examples."


@pytest.mark.usefixtures("base")
def test_the_runner_validates_jobs_and_fails_a_bad_file_with_its_lines(conn, training):
    job = new_job(conn, training)
    upload_path(training).write_bytes(LINE + b"not json\n")  # changed behind the store's back
    runner = JobRunner().start()
    try:
        deadline = time.monotonic() + 60
        while get_job(conn, job.id).status == "validating_files":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        runner.stop()
    failed = get_job(conn, job.id)
    assert failed.status == "failed" and failed.error["code"] == "invalid_training_file"
    assert failed.error["param"] == "training_file" and "invalid_json: 1 (line 2)" in failed.error["message"]
    assert failed.error["message"].startswith(f"{training} (chat format")  # the file's id, not its path
    assert not runner.workers  # no worker was started for it


def test_the_server_side_never_imports_torch():
    code = ("import sys, gpts.jobs, gpts.server.routes.files, gpts.server.routes.fine_tuning; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
