"""Fine-tuning jobs through the official `openai` client against a real server: a job through to `succeeded` and its
model answering, cancel, a server restart in the middle of a job, a worker that dies; the real worker process."""

import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import openai
import pytest

from gpts.finetune_data import load_dataset
from gpts.jobs import get_job
from gpts.jobs.fine_tuning import run_dir
from gpts.server.app import ServerSettings, create_app
from gpts.store.db import connect
from gpts.tokenizer import Tokenizer

from helpers import running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHATS = EXAMPLES / "chats.jsonl"
POLL_S = 0.2
DEADLINE_S = 600  # a hung job fails the test instead of hanging it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random llama-nano whose context holds the examples of chats.jsonl (about 300 tokens of its small vocabulary),
    served as the model "tiny"."""
    from helpers import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny", context_length=512)


@pytest.fixture(autouse=True)
def one_thread_workers(monkeypatch):
    """Workers inherit the server's environment: one thread each, as for tiny models in the other tests (two threads
    fighting other work for two cores make a step ten times slower)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def api(serve, tiny) -> openai.OpenAI:
    return client(serve(create_app(ServerSettings(models=[str(tiny)]))))


def wait_for(what, check):
    """Poll `check()` until it returns something true; fail after DEADLINE_S (a hang, not a slow machine)."""
    deadline = time.monotonic() + DEADLINE_S
    while not (found := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(POLL_S)
    return found


def events(api, job_id) -> list:
    """All the job's events, oldest first (the API pages them newest first)."""
    return list(reversed(list(api.fine_tuning.jobs.list_events(job_id, limit=100))))


def metric_steps(api, job_id) -> list[int]:
    return [e.data["step"] for e in events(api, job_id) if e.type == "metrics"]


def finished(api, job_id):
    job = api.fine_tuning.jobs.retrieve(job_id)
    return job if job.status in ("succeeded", "failed", "cancelled") else None


def long_job(api) -> str:
    """A job of 600 steps: it is still running when a test stops it after its first steps."""
    training = api.files.create(file=open(CHATS, "rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model="tiny", training_file=training.id,
                                      hyperparameters={"n_epochs": 50, "batch_size": 1})
    wait_for("the first step", lambda: metric_steps(api, job.id))
    return job.id


def test_a_job_runs_to_succeeded_and_its_model_answers(api, tiny):
    training = api.files.create(file=open(CHATS, "rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="my-suffix", seed=7,
                                      method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": 1, "batch_size": 4}}})
    assert job.id.startswith("ftjob-") and job.status == "validating_files" and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.learning_rate_multiplier == "auto"

    job = wait_for("the job to end", lambda: finished(api, job.id))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny:my-suffix:{job.id.removeprefix('ftjob-')[:8]}"
    assert job.finished_at >= job.created_at and job.seed == 7 and job.error is None
    examples = load_dataset(CHATS, Tokenizer.from_dir(tiny), max_len=512)
    assert job.trained_tokens == examples.tokens  # one epoch over the training file, as OpenAI counts
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size,
            job.hyperparameters.learning_rate_multiplier) == (1, 4, 1.0)  # "auto" resolved as the run chose
    assert [j.id for j in api.fine_tuning.jobs.list()] == [job.id]

    timeline = events(api, job.id)
    messages = [e.message for e in timeline if e.type == "message"]
    for said in (f"Created fine-tuning job: {job.id}", "Fine-tuning job started", "The job has successfully completed",
                 f"New fine-tuned model created: {job.fine_tuned_model}"):
        assert said in messages
    metrics = [e for e in timeline if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [1, 2, 3]  # 12 examples in batches of 4
    assert metrics[0].message.startswith("Step 1/3: training loss=") and metrics[0].object == "fine_tuning.job.event"
    assert {"train_loss", "train_mean_token_accuracy", "total_steps"} <= metrics[0].data.keys()

    (checkpoint,) = api.fine_tuning.jobs.checkpoints.list(job.id)  # the end of the one epoch
    assert checkpoint.step_number == 3 and checkpoint.metrics.train_loss == metrics[-1].data["train_loss"]
    assert checkpoint.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-3"

    (results,) = job.result_files
    assert api.files.retrieve(results).purpose == "fine-tune-results"
    assert api.files.content(results).text.startswith("step,train_loss,")

    assert job.fine_tuned_model in [m.id for m in api.models.list()]
    answer = api.chat.completions.create(model=job.fine_tuned_model, max_tokens=5,
                                         messages=[{"role": "user", "content": "When are you open on Saturday?"}])
    assert answer.model == job.fine_tuned_model and answer.usage.completion_tokens > 0


def test_a_running_job_is_cancelled_and_its_worker_stops(api):
    job_id = long_job(api)
    training_file = api.fine_tuning.jobs.retrieve(job_id).training_file
    with pytest.raises(openai.ConflictError, match="which is running"):
        api.files.delete(training_file)  # a job that has not ended needs its file

    cancelled = api.fine_tuning.jobs.cancel(job_id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    stopped = wait_for("the worker to stop", lambda: [e.message for e in events(api, job_id)
                                                      if e.message.startswith("Cancelled at step")])
    assert 0 < int(stopped[0].split()[-1].rstrip(".")) < 600
    job = api.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "cancelled" and job.fine_tuned_model is None and job.result_files == []
    assert not run_dir(job_id).exists()  # a cancelled job keeps nothing
    with pytest.raises(openai.ConflictError, match="nothing to cancel"):
        api.fine_tuning.jobs.cancel(job_id)
    assert api.files.delete(training_file).deleted


def test_a_job_running_when_the_server_stops_resumes_at_the_next_start(serve, tiny):
    with running(create_app(ServerSettings(models=[str(tiny)]))) as url:
        job_id = long_job(client(url))
    # The server stopped: its worker saved a checkpoint, and the job is still running, with no runner.
    with closing(connect()) as conn:
        assert get_job(conn, job_id).status == "running"
    api = client(serve(create_app(ServerSettings(models=[str(tiny)]))))
    paused = [e.message for e in events(api, job_id) if e.message.startswith("Paused at step")]
    (paused_at,) = [int(m.split()[3]) for m in paused]
    resumed = wait_for("the job to resume", lambda: [e for e in events(api, job_id) if "Resuming" in e.message])
    assert resumed[0].message.startswith(f"Resuming from the checkpoint at step {paused_at}:")
    wait_for("a step after the checkpoint", lambda: max(metric_steps(api, job_id)) > paused_at)
    steps = metric_steps(api, job_id)
    assert steps == list(range(1, len(steps) + 1))  # each step once: the run went on where it stopped
    api.fine_tuning.jobs.cancel(job_id)
    wait_for("the worker to stop", lambda: not run_dir(job_id).exists())


@pytest.mark.slow  # the graceful restart above proves the resumption; this one, a server that dies at once
def test_a_job_resumes_after_its_server_is_killed(tiny):
    script = Path(sys.executable).parent / "gpts"
    if not script.is_file():
        pytest.skip("the gpts console script is not installed beside this interpreter")

    def gpts_serve() -> tuple[subprocess.Popen, openai.OpenAI]:
        server = subprocess.Popen([str(script), "serve", "--port", "0", "--model", str(tiny)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        server.stdout.readline()  # Open http://127.0.0.1:PORT/ in a browser: ...
        url = server.stdout.readline().split()[-1]  # OpenAI's API: http://127.0.0.1:PORT/v1
        return server, openai.OpenAI(base_url=url, api_key="unused", max_retries=0)

    server, api = gpts_serve()
    job_id = long_job(api)
    server.kill()  # no shutdown: the worker sees its standard input close, and stops with a checkpoint
    server.wait()
    server, api = gpts_serve()
    try:
        resumed = wait_for("the job to resume", lambda: [e.message for e in events(api, job_id)
                                                         if e.message.startswith("Resuming from the checkpoint")])
        at = int(resumed[0].split()[6].rstrip(":"))
        assert at >= 1  # where the killed server's worker stopped, after the step the test saw
        wait_for("a step after the checkpoint", lambda: max(metric_steps(api, job_id)) > at)
        api.fine_tuning.jobs.cancel(job_id)
        wait_for("the worker to stop", lambda: not run_dir(job_id).exists())
    finally:
        server.terminate()
        server.wait()


def test_a_worker_that_dies_fails_its_job_with_the_reason(serve, tiny):
    app = create_app(ServerSettings(models=[str(tiny)]))
    api = client(serve(app))
    job_id = long_job(api)
    os.kill(app.state.job_runner.workers[job_id].process.pid, signal.SIGKILL)  # as the system does, out of memory
    job = wait_for("the job to fail", lambda: finished(api, job_id))
    assert job.status == "failed" and job.error.code == "worker_died"
    assert "killed by SIGKILL" in job.error.message and f"{job_id}.log" in job.error.message


def test_bad_requests_name_the_parameter(api):
    training = api.files.create(file=open(CHATS, "rb"), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError) as e:
        api.fine_tuning.jobs.create(model="no-such-model", training_file=training.id)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file="file-nope")
    assert e.value.param == "training_file" and "file-nope" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file=training.id, hyperparameters={"n_epochs": 0})
    assert e.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file=training.id, method={"type": "dpo"})
    assert e.value.param == "method.type"
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="a:b")
    assert e.value.param == "suffix"
    with pytest.raises(openai.NotFoundError):
        api.fine_tuning.jobs.retrieve("ftjob-nope")
    assert list(api.fine_tuning.jobs.list()) == []


def test_the_openai_guide_runs_unchanged(serve, tiny):
    url = serve(create_app(ServerSettings(models=[str(tiny)])))
    env = {**os.environ, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": "unused", "FINETUNE_MODEL": "tiny"}
    guide = subprocess.run([sys.executable, EXAMPLES / "openai_finetune.py"], env=env, capture_output=True, text=True,
                           timeout=DEADLINE_S)
    assert guide.returncode == 0, guide.stderr
    assert "succeeded: New fine-tuned model created: ft:tiny::" in guide.stdout
    assert guide.stdout.splitlines()[-1].startswith("ChatCompletionMessage(content=")
