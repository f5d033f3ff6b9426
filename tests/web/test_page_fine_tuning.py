"""Fine-tuning in the browser: a file with a broken line is refused with that line named; a tiny job on the bundled
model runs to succeeded and its model answers in a chat one link away; a job that fails says why; a long job's curves
grow step by step while it runs, and it is cancelled. The jobs run one at a time in the shared server's job worker."""

from __future__ import annotations

import json
import re
import time
import uuid

from playwright.sync_api import Locator, Page, expect

MODEL = "smollm2-135m-instruct"
# Three short examples, one epoch in batches of one: three steps. About 10 s with the model's loading on an idle
# machine, 90 s on two cores busy with other tests; the limit leaves room for a slower CI machine.
JOB_TIMEOUT_MS = 300_000
# A fine-tuned model's first answer loads it first: seconds on an idle machine, a minute on two busy cores.
ANSWER_MS = 120_000
EXAMPLES = [("What colour is the sky?", "Blue."), ("What colour is grass?", "Green."),
            ("What colour is snow?", "White.")]


def chat_jsonl(pairs, **assistant) -> bytes:
    """A chat fine-tuning file: a line per (question, answer); `assistant` adds keys to each answer's message."""
    return "".join(json.dumps({"messages": [{"role": "user", "content": q},
                                            {"role": "assistant", "content": a, **assistant}]}) + "\n"
                   for q, a in pairs).encode()


def upload(page: Page, name: str, content: bytes) -> None:
    page.get_by_label("JSONL file").set_input_files({"name": name, "mimeType": "application/jsonl", "buffer": content})
    page.get_by_role("button", name="Upload").click()


def start_job(page: Page, name: str, content: bytes, epochs: int, suffix: str = "", shot=None) -> Locator:
    """Upload a training file and start a job on it, one example a step: the job's region once the page follows it."""
    page.goto("/fine-tuning")
    expect(page.get_by_label("Base model")).to_have_value(MODEL)
    upload(page, name, content)
    expect(page.get_by_role("list", name="Uploaded files")).to_contain_text(name)
    expect(page.get_by_label("Training file", exact=True)).to_have_value(re.compile("^file-"))  # the new file, chosen
    page.get_by_label("Epochs").fill(str(epochs))
    page.get_by_label("Batch size").fill("1")
    page.get_by_label("Suffix").fill(suffix)
    if shot:
        shot(page, "job-form")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page).to_have_url(re.compile(r"/fine-tuning\?job=ftjob-\w+$"))  # the job followed is in the address
    return page.get_by_role("region", name=re.compile(r"^Job ftjob-"))


def step(last_point: str) -> int:
    """The step of a chart's last point, from its description: "training: 2.31 at Step 4" -> 4."""
    return int(last_point.rsplit(" ", 1)[1])


def test_a_broken_line_is_named(page: Page, shot):
    page.goto("/fine-tuning")
    expect(page.get_by_role("heading", name="Fine-tuning", level=1)).to_be_visible()
    shot(page, "empty")

    good = chat_jsonl(EXAMPLES[:1])
    broken = good + b'{"messages": [{"role": "user", "content": "Hi"}\n' + good  # line 2 is cut short
    upload(page, "broken.jsonl", broken)
    problems = page.get_by_role("alert").filter(has_text="broken.jsonl")
    expect(problems).to_contain_text("has 1 error")
    expect(problems.get_by_role("listitem")).to_have_text(re.compile(r"^line 2: the line is not valid JSON"))
    expect(problems).to_contain_text("Fix those lines")
    expect(page.get_by_role("list", name="Uploaded files")).not_to_contain_text("broken.jsonl")  # nothing kept
    shot(page, "refused")


def test_a_tiny_job_runs_to_a_model_to_chat_with(page: Page, phone: Page, shot):
    suffix = f"web-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    job = start_job(page, "colours.jsonl", chat_jsonl(EXAMPLES), epochs=1, suffix=suffix, shot=shot)
    expect(page.get_by_label("Base model").get_by_role("option")).not_to_contain_text(["gpts-tutor"])  # not GPTs
    expect(job.get_by_role("button", name="Cancel job")).to_be_visible()
    shot(page, "started")

    expect(job.get_by_role("status")).to_have_text("Succeeded", timeout=JOB_TIMEOUT_MS)
    print(f"\nthe tiny job took {time.monotonic() - started:.1f} s")
    loss = job.get_by_role("img", name=re.compile("^Loss"))
    expect(loss).to_contain_text("training: ")  # its summary: the last step's loss
    expect(loss.locator("path.chart-line")).to_have_count(1)
    expect(job.get_by_role("img", name=re.compile("^Token accuracy"))).to_be_visible()
    expect(job.get_by_role("list", name="Messages")).to_contain_text("The job has successfully completed")
    expect(job.get_by_role("cell", name=re.compile(":ckpt-step-3$"))).to_be_visible()
    expect(job.get_by_role("button", name="Cancel job")).to_have_count(0)
    chat = job.get_by_role("link", name="Chat with it")
    model = f"ft:{MODEL}:{suffix}:".replace(":", "%3A")
    expect(chat).to_have_attribute("href", re.compile(rf"^/\?model={re.escape(model)}\w{{8}}$"))
    shot(page, "succeeded")

    phone.goto(page.url)  # the address brings the same job back, here on a phone
    expect(phone.get_by_role("region", name=re.compile(r"^Job ftjob-")).get_by_role("status")).to_have_text("Succeeded")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px screen"
    shot(phone, "phone")
    page.emulate_media(color_scheme="dark")
    shot(page, "succeeded-dark")

    chat.click()
    expect(page).to_have_url(re.compile(r"/\?model=ft"))
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(rf"^ft:{MODEL}:{suffix}:"))
    page.get_by_label("Max tokens").fill("16")
    page.get_by_role("textbox", name="Message").fill(EXAMPLES[0][0])
    page.get_by_role("textbox", name="Message").press("Enter")
    answer = page.locator("article.message.assistant")
    expect(answer.locator(".meta")).to_contain_text(re.compile(r"\d+ generated tokens"), timeout=ANSWER_MS)
    expect(answer.locator(".content")).to_contain_text(re.compile(r"\w"))
    shot(page, "chat")


def test_a_failed_job_says_why(page: Page, shot):
    job = start_job(page, "untrained.jsonl", chat_jsonl(EXAMPLES, weight=0), epochs=1)  # no token to learn
    expect(job.get_by_role("status")).to_have_text("Failed", timeout=JOB_TIMEOUT_MS)
    expect(job.get_by_role("alert")).to_contain_text("The job failed: ")
    expect(job.get_by_role("alert")).to_contain_text("no example has a token to train on")
    expect(job.get_by_role("link", name="Chat with it")).to_have_count(0)
    shot(page, "failed")


def test_a_running_job_draws_its_curves_live_then_is_cancelled(page: Page, shot):
    job = start_job(page, "long.jsonl", chat_jsonl(EXAMPLES), epochs=50)
    status = job.get_by_role("status")
    expect(status).to_have_text("Running", timeout=JOB_TIMEOUT_MS)
    page.evaluate("window.stayed = true")  # gone if the page reloaded: the curves must grow in place
    # The chart's description (in its accessible name) says each series' last point: "training: 2.31 at Step 4".
    last_point = job.get_by_role("img", name=re.compile("^Loss")).locator("desc")
    expect(last_point).to_have_text(re.compile(r"^training: [\d.]+ at Step \d+$"), timeout=JOB_TIMEOUT_MS)
    first = last_point.text_content()
    expect(status).to_have_text("Running")
    shot(page, "first-steps")

    expect(last_point).not_to_have_text(first, timeout=JOB_TIMEOUT_MS)  # the next round of polling drew more
    later = last_point.text_content()
    assert step(later) > step(first), f"{later!r} after {first!r}"
    expect(status).to_have_text("Running")
    assert page.evaluate("window.stayed === true")
    shot(page, "later-steps")

    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel ftjob-...? A cancelled job keeps nothing"
    job.get_by_role("button", name="Cancel job").click()
    expect(status).to_have_text("Cancelled")
    expect(page.get_by_role("listitem").filter(has=page.get_by_role("link", name=re.compile("ftjob-")))
           .filter(has_text="Cancelled")).not_to_have_count(0)
    expect(job.get_by_role("button", name="Cancel job")).to_have_count(0)
    shot(page, "cancelled")

