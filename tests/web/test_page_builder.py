"""The builder in the browser: build a GPT with a knowledge file, try it in the preview chat before it is saved, save
it, and get a cited answer from it on the chat page; the instructions' limit; a server's refusal shown beside its
field; evaluate and tune a GPT with an evaluation set; the phone layout in dark mode. The server is shared by every
web test, so each test makes its own GPTs, under names no other test uses."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx2 as httpx
from playwright.sync_api import Locator, Page, expect

FACT = "The Larkspur office opens at 7:45 on Tuesdays."
SLOW_MS = 120_000  # an answer from a GPT loaded for the first time, or a tuning run on a busy CPU


def unique(prefix: str) -> tuple[str, str]:
    """A name no other test uses, and the slug the server derives from it."""
    tag = uuid.uuid4().hex[:8]
    return f"{prefix} {tag}", f"{prefix.lower().replace(' ', '-')}-{tag}"


def field_error(page: Page, label: str) -> Locator:
    """The server's message shown beside the field labelled `label`."""
    return page.locator(".field", has=page.get_by_label(label, exact=True)).locator(".field-error")


def last_answer(where: Page | Locator) -> Locator:
    answer = where.locator("article.message.assistant").last
    expect(answer).not_to_have_class(re.compile("streaming"), timeout=SLOW_MS)
    return answer


def test_build_preview_save_and_cite(page: Page, shot, tmp_path: Path):
    name, slug = unique("Larkspur office")
    office = tmp_path / "office.md"
    office.write_text(f"# Office hours\n\n{FACT}\nOn other days it opens at 9:00.\n")
    broken = tmp_path / "notes.docx"
    broken.write_bytes(b"PK\x03\x04 not a document gpts reads")

    page.goto("/builder")
    expect(page.get_by_role("heading", name="New GPT")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("textbox", name="Instructions").fill("Answer from the office notes, in one short sentence.")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("40")
    page.get_by_role("button", name="Add a starter").click()
    page.get_by_label("Conversation starter 1").fill("When does the office open on Tuesdays?")
    page.get_by_role("button", name="Add an example").click()
    page.get_by_label("Example 1, user").fill("Is there parking?")
    page.get_by_label("Example 1, assistant").fill("Yes, behind the building.")
    shot(page, "form")

    # A new GPT is saved before its first file goes up; each file is its own request, with its own error.
    page.get_by_label("Upload knowledge files").set_input_files([office, broken])
    expect(page).to_have_url(re.compile(f"/builder/{slug}$"))
    expect(page.get_by_role("status").filter(has_text="saved first")).to_be_visible()
    files = page.get_by_role("region", name="Knowledge")
    expect(files.locator(".file", has_text="office.md")).to_contain_text("passage")
    expect(files.locator(".upload", has_text="notes.docx")).to_contain_text(".docx")
    expect(page.get_by_role("heading", name=f"Edit {name}")).to_be_visible()
    shot(page, "knowledge")

    # The preview answers from the draft (with the saved GPT's knowledge); its starters are the draft's.
    preview = page.get_by_role("complementary", name="Preview")
    preview.get_by_role("button", name="When does the office open on Tuesdays?").click()
    answer = last_answer(preview)
    expect(answer.locator(".content")).not_to_be_empty()
    expect(answer.locator(".citations")).to_contain_text("office.md")
    shot(page, "preview")

    # Save a change as a new version, with a note.
    page.get_by_label("Description").fill("When the Larkspur office opens.")
    expect(page.get_by_text("Unsaved changes")).to_be_visible()
    page.get_by_label("What changed").fill("a description")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved version")).to_be_visible()
    expect(page.locator(".save-state")).to_have_text("Saved")
    shot(page, "saved")

    page.goto(f"/?model={slug}")
    page.get_by_role("textbox", name="Message").fill("When does the office open on Tuesdays?")
    page.keyboard.press("Enter")
    answer = last_answer(page.get_by_role("log", name="Conversation"))
    expect(answer.locator(".citations")).to_contain_text("office.md")
    shot(page, "cited")


def test_instructions_over_the_limit_disable_save(page: Page, shot, server: str):
    limit = httpx.get(f"{server}/v1/gpt_spec").json()["max_instructions"]
    page.goto("/builder")
    page.get_by_label("Name", exact=True).fill(unique("Long winded")[0])
    instructions = page.get_by_role("textbox", name="Instructions")
    instructions.fill("x" * limit)
    expect(page.get_by_role("button", name="Save")).to_be_enabled()
    instructions.press("End")
    instructions.type("yz")
    counter = page.locator(".counter")
    expect(counter).to_contain_text("2 over the limit")
    expect(counter).to_have_class(re.compile("error-text"))
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    page.evaluate("scrollTo(0, 0)")  # a full-page shot draws the sticky save bar where the window is
    shot(page, "over")
    instructions.press("Backspace")
    instructions.press("Backspace")
    expect(page.get_by_role("button", name="Save")).to_be_enabled()
    expect(counter).not_to_contain_text("over")


def test_server_refusal_shows_beside_its_field(page: Page, shot):
    page.goto("/builder")
    page.get_by_label("Name", exact=True).fill(unique("Spaced out")[0])
    page.get_by_label("Slug").fill("spaced out helper")
    page.get_by_role("button", name="Save").click()
    expect(field_error(page, "Slug")).to_contain_text("lowercase letters")
    expect(page.get_by_label("Slug")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Slug")).to_be_focused()
    expect(page).to_have_url(re.compile("/builder$"))  # nothing was saved
    shot(page, "slug-refused")

    # A nested field: the error names generation.top_k, and shows beside Top k.
    page.get_by_label("Slug").fill("")
    page.get_by_label("Top k").fill("4.5")
    page.get_by_role("button", name="Save").click()
    expect(field_error(page, "Top k")).to_be_visible()
    expect(field_error(page, "Slug")).to_be_hidden()
    shot(page, "top-k-refused")


def test_evaluate_and_tune(page: Page, shot, server: str, tmp_path: Path):
    name, slug = unique("Capitals quiz")
    response = httpx.post(f"{server}/v1/gpts", json={
        "name": name, "instructions": "Answer with the city's name only.", "generation": {"max_tokens": 8},
        "examples": [[{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]]})
    assert response.status_code == 200, response.text
    evaluation = tmp_path / "capitals.jsonl"
    evaluation.write_text("".join(json.dumps({"prompt": f"Capital of {country}?", "answer": city}) + "\n"
                                  for country, city in [("France", "Paris"), ("Italy", "Rome")]))

    page.goto(f"/builder/{slug}")
    section = page.get_by_role("region", name="Evaluation")
    expect(section.get_by_role("button", name="Evaluate")).to_be_hidden()
    section.get_by_label("Upload an evaluation set").set_input_files(evaluation)
    expect(section).to_contain_text("Evaluation set: capitals.jsonl")
    shot(page, "evaluation-set")

    section.get_by_role("button", name="Evaluate").click()
    expect(section.locator(".eval-result")).to_contain_text("contains", timeout=SLOW_MS)
    shot(page, "evaluated")

    section.get_by_text("Tuning settings").click()
    section.get_by_label("Max steps").fill("1")
    section.get_by_role("button", name="Tune").click()
    expect(section.get_by_role("button", name="Cancel")).to_be_visible()
    expect(section.get_by_role("list", name="Tuning progress")).not_to_be_empty(timeout=SLOW_MS)
    expect(section.locator(".eval-result")).to_contain_text("After", timeout=SLOW_MS)
    expect(section.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.locator(".builder-links .badge")).to_have_text("version 3")  # the set, then the tuned model
    shot(page, "tuned")


def test_leaving_unsaved_changes_asks_first(page: Page, shot):
    """A link or the back button away from a draft with unsaved changes asks; cancelled, the draft stays as it was."""
    page.goto("/store")
    page.get_by_role("link", name="Builder").click()
    page.get_by_label("Name", exact=True).fill("A draft not saved")
    asked = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    page.get_by_role("link", name="Chat", exact=True).click()
    expect(page).to_have_url(re.compile(r"/builder$"))
    page.once("dialog", answer(False))
    page.go_back()
    expect(page).to_have_url(re.compile(r"/builder$"))
    expect(page.get_by_label("Name", exact=True)).to_have_value("A draft not saved")
    assert len(asked) == 2 and all("not saved" in question for question in asked)
    shot(page, "kept")

    page.once("dialog", answer(True))
    page.get_by_role("link", name="Store", exact=True).click()
    expect(page).to_have_url(re.compile(r"/store$"))
    page.get_by_role("link", name="Builder").click()  # an empty form: nothing to lose, nothing asked
    page.get_by_role("link", name="Models").click()
    expect(page).to_have_url(re.compile(r"/models$"))
    assert len(asked) == 3


def test_phone_layout_dark(phone: Page, shot):
    phone.emulate_media(color_scheme="dark")
    phone.goto("/builder")
    expect(phone.get_by_role("heading", name="New GPT")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    form = phone.locator(".builder-form").bounding_box()
    preview = phone.get_by_role("complementary", name="Preview").bounding_box()
    assert preview["y"] >= form["y"] + form["height"], "the preview comes below the form on a phone"
    shot(phone, "dark")
    phone.get_by_role("button", name="Preview", exact=True).click()
    expect(phone.get_by_role("textbox", name="Message the preview")).to_be_focused()
    expect(phone.get_by_role("complementary", name="Preview")).to_be_in_viewport()
