"""OpenAI's fine-tuning guide, call for call, against `gpts serve`: upload a JSONL file of chats, create a job, poll
it, then chat with the model it made. The official client finds the server through its usual environment variables:

    gpts serve &
    export OPENAI_BASE_URL=http://127.0.0.1:8000/v1
    export OPENAI_API_KEY=unused    # or a key of the server's (gpts keys create)
    python examples/openai_finetune.py

The base model is the bundled one (FINETUNE_MODEL names another model the server serves); the examples are the
twelve chats of a town library's assistant in chats.jsonl, beside this file.
"""

import os
import time
from pathlib import Path

from openai import OpenAI

client = OpenAI()

training_file = client.files.create(
    file=open(Path(__file__).with_name("chats.jsonl"), "rb"),
    purpose="fine-tune",
)

job = client.fine_tuning.jobs.create(
    training_file=training_file.id,
    model=os.environ.get("FINETUNE_MODEL", "smollm2-135m-instruct"),
)

while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(2)
    job = client.fine_tuning.jobs.retrieve(job.id)
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=1)
    print(f"{job.status}: {events.data[0].message}" if events.data else job.status)

if job.status != "succeeded":
    raise SystemExit(f"The job {job.status}: {job.error.message if job.error else ''}")

completion = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[
        {"role": "system", "content": "You are the assistant of the town library. Answer in one or two sentences."},
        {"role": "user", "content": "Are you open on Sunday?"},
    ],
)
print(completion.choices[0].message)
