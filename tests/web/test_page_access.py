"""Access and failures in the browser. A server started with an API key asks for it (the “API key” dialog) when a
call is refused, keeps it for the tab (a reload keeps it, another tab asks again) and forgets it on demand. A full
queue and a lost connection are said plainly, each with a Retry that works once the server answers again. (A model
that is not there, and a connection lost in the chat and the store, are in test_page_chat.py and test_page_store.py.)"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

MODEL = "smollm2-135m-instruct"
ANSWER_MS = 60_000  # a short answer from the bundled model on a core that other work holds too
# What gpts serve answers when its engine's queue is full (gpts.server.serving), faked here: a full queue cannot be
# made on demand without holding the shared server's engine.
QUEUE_FULL = {"error": {"message": "The server is busy: The engine is full (requests running: 4, waiting: 16). "
                                   "Retry in a moment.", "type": "rate_limit_error", "param": None,
                        "code": "queue_full"}}


def test_a_server_with_a_key_asks_for_it_and_keeps_it_for_the_tab(page: Page, keyed_server, shot):
    url, key = keyed_server
    page.goto(f"{url}/store")
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Key")).to_be_focused()
    expect(page.get_by_role("alert").filter(has_text="This server needs an API key")).to_be_visible()
    shot(page, "asked")

    dialog.get_by_label("Key").fill("not-the-key")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_visible()  # refused: asked again, the wrong key in the box to correct
    expect(dialog.get_by_label("Key")).to_have_value("not-the-key")
    expect(page.get_by_role("alert").filter(has_text="The server refused this API key")).to_be_visible()
    shot(page, "wrong-key")

    dialog.get_by_label("Key").fill(key)
    dialog.get_by_role("button", name="Save").click()
    store = page.get_by_role("region", name="All GPTs")
    expect(store.get_by_role("link", name="gpts tutor")).to_be_visible()  # the ready GPTs, installed at start
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="API key ✓")).to_be_visible()
    shot(page, "store")

    page.reload()
    expect(store.get_by_role("link", name="gpts tutor")).to_be_visible()
    expect(dialog).to_be_hidden()
    shot(page, "reloaded")

    other = page.context.new_page()  # the key is kept for its tab alone
    other.goto(f"{url}/store")
    expect(other.get_by_role("dialog", name="API key")).to_be_visible()
    shot(other, "other-tab")
    other.close()

    page.get_by_role("button", name="API key ✓").click()
    expect(dialog.get_by_label("Key")).to_have_value(key)
    dialog.get_by_role("button", name="Forget").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="API key", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(dialog).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text="This server needs an API key")).to_be_visible()
    shot(page, "forgotten")


def test_a_full_queue_says_the_server_is_busy_and_retry_answers(page: Page, shot):
    page.goto("/")
    expect(page.get_by_role("combobox", name="Model")).to_have_value(MODEL)
    page.get_by_label("Max tokens").fill("16")
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "1"}, content_type="application/json", body=json.dumps(QUEUE_FULL)))
    page.get_by_role("textbox", name="Message").fill("Hello?")
    page.get_by_role("textbox", name="Message").press("Enter")
    error = page.locator("article.message.assistant").get_by_role("alert")
    expect(error).to_contain_text("The server is busy: The engine is full")
    expect(error).to_contain_text("The engine is full")
    shot(page, "busy")

    page.unroute("**/v1/chat/completions")
    error.get_by_role("button", name="Retry").click()
    answer = page.locator("article.message.assistant")
    expect(answer.locator(".meta")).to_contain_text(re.compile(r"\d+ generated tokens"), timeout=ANSWER_MS)
    expect(answer.get_by_role("alert")).to_have_count(0)
    expect(page.locator("article.message")).to_have_count(2)
    shot(page, "answered")


@pytest.mark.parametrize(("path", "call", "loaded"), [
    ("/fine-tuning", "**/v1/fine_tuning/jobs*", "New job"),
    ("/models", "**/v1/model_details", "Served"),
], ids=["fine-tuning", "models"])
def test_a_lost_connection_offers_a_retry(page: Page, shot, path: str, call: str, loaded: str):
    page.route(call, lambda route: route.abort())  # the server goes away as the page loads
    page.goto(path)
    expect(page.get_by_role("alert")).to_contain_text("The connection to the server was lost")
    shot(page, "lost")

    page.unroute(call)
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("heading", name=re.compile(f"^{loaded}"))).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text="connection")).to_have_count(0)
    shot(page, "retried")
