"""The chat page (/) in a browser: a streamed answer with its usage and speed, Stop and Regenerate, a GPT's
conversation starters and citations, the conversation list (rename, resume from its address, delete), saves that
failed and their retry, editing a sent message, and the phone-sized layout. Answers are kept short (Max tokens in the
settings): the bundled model on a busy core makes 10-20 tokens a second."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import httpx2 as httpx
from playwright.sync_api import Page, expect

LONG = "Write a long story about a dragon who learns to bake bread."  # hundreds of tokens, when they are let
SHORT = "24"  # tokens: a sentence or two, a few seconds
STOPPED = re.compile(r"^[\d,]+ generated tokens? · [\d.]+ tokens/s · stopped$")  # counted by the page: no usage came
ANSWER_MS = 60_000  # how long an answer may take on a core that other work holds too (expect's default is 5 s)
TUTOR = "gpts-tutor"  # a GPT the store ships with: conversation starters, and a guide as its knowledge


def _settings(page: Page, max_tokens: str = SHORT) -> None:
    """Greedy answers of at most `max_tokens`, set in the settings panel (open on a desktop)."""
    page.get_by_label("Max tokens").fill(max_tokens)
    page.get_by_label("Temperature").fill("0")


def _send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def _answered(page: Page, n: int = 1):
    """The n-th answer, once it is whole (Send is back, and its usage line came)."""
    answer = page.locator("article.message.assistant").nth(n - 1)
    expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=ANSWER_MS)
    expect(answer.locator(".meta")).to_contain_text("tokens/s")
    return answer


def _shows(answer, stored: str) -> None:
    """The answer on the page is the stored one as Markdown draws it: without its markers (`**`, `#`, list numbers,
    code fences), so the words are compared: those shown, in order, are the stored text's. A code block's bar (its
    language and Copy) is the page's own."""
    shown = answer.locator(".content").evaluate(
        "content => [...content.children].map((block) => (block.querySelector('pre') || block).innerText).join('\\n')")
    words = re.compile(r"[^\W_]+")
    stored_words = iter(words.findall(stored))
    shown_words = words.findall(shown)
    assert shown_words, "the page shows no answer"
    assert all(word in stored_words for word in shown_words), f"the page shows {shown!r}, the store has {stored!r}"


def _stored(page: Page, server: str, until: Callable[[dict], bool]) -> dict:
    """The conversation the page shows, as the store has it once `until` holds: the page stores each answer after
    showing it (the address carries the conversation's id from its first one)."""
    expect(page).to_have_url(re.compile(r"[?&]c=\w+"))
    conversation_id = parse_qs(urlparse(page.url).query)["c"][0]
    deadline = time.monotonic() + 10
    while not until(stored := httpx.get(f"{server}/v1/conversations/{conversation_id}").json()):
        assert time.monotonic() < deadline, f"the store has {stored}"
        time.sleep(0.1)
    return stored


def _turns(n: int) -> Callable[[dict], bool]:
    return lambda conversation: conversation["turns"] == n


def test_send_a_message_and_see_the_answer_stream(page: Page, server: str, shot) -> None:
    page.goto("/")
    expect(page.get_by_role("combobox", name="Model")).to_have_value("smollm2-135m-instruct")
    _settings(page, max_tokens="60")  # long enough to be seen coming
    shot(page, "empty")
    _send(page, LONG)
    expect(page.locator("article.message.user .bubble")).to_have_text(LONG)
    # Part of the answer shows while it is still coming (Stop is there): checked in one go, in the page, as the bundled
    # model on a free core may write the rest in a second.
    page.wait_for_function("""() => {
      const stop = [...document.querySelectorAll(".composer button")].find((b) => b.textContent === "Stop");
      const shown = document.querySelector("article.message.assistant .content")?.innerText || "";
      return stop && !stop.hidden && /\\w+ \\w+/.test(shown);
    }""", timeout=ANSWER_MS)
    shot(page, "streaming")
    answer = _answered(page)
    expect(answer.locator(".content")).to_contain_text(re.compile(r"\w+"))
    expect(answer.locator(".meta")).to_contain_text(
        re.compile(r"\d+ prompt \+ \d+ generated tokens (\(\d+ cached\) )?· [\d.]+ tokens/s"))  # cached: a prefix reused
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()
    shot(page, "answered")
    stored = _stored(page, server, _turns(1))
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    _shows(answer, stored["messages"][1]["content"])


def test_stop_a_long_answer_then_regenerate(page: Page, server: str, shot) -> None:
    page.goto("/")
    _settings(page, max_tokens="1000")
    _send(page, LONG)
    answer = page.locator("article.message.assistant")
    expect(answer.locator(".content")).to_contain_text(re.compile(r"\w+ \w+ \w+"), timeout=ANSWER_MS)  # words came
    shot(page, "streaming")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(answer.locator(".meta")).to_have_text(STOPPED)
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()
    shot(page, "stopped")
    stored = _stored(page, server, _turns(1))  # the stopped answer is a turn, as far as it went
    stopped = stored["messages"][1]["content"]
    _shows(answer, stopped)
    assert len(stopped.split()) < 200
    assert stored["messages"][1]["usage"]["completion_tokens"] > 0

    _settings(page)  # the next answer is short
    page.get_by_role("button", name="Regenerate").click()
    regenerated = _answered(page)
    expect(page.locator("article.message")).to_have_count(2)
    shot(page, "regenerated")
    stored = _stored(page, server, lambda conversation: conversation["messages"][1]["content"] != stopped)
    assert stored["turns"] == 1
    _shows(regenerated, stored["messages"][1]["content"])


def test_escape_stops_an_answer(page: Page, shot) -> None:
    page.goto("/")
    _settings(page, max_tokens="1000")
    _send(page, LONG)
    expect(page.locator("article.message.assistant .content")).to_contain_text(re.compile(r"\w+ \w+"), timeout=ANSWER_MS)
    page.get_by_role("textbox", name="Message").press("Escape")
    expect(page.locator("article.message.assistant .meta")).to_have_text(STOPPED)
    shot(page, "stopped")


def test_a_lost_connection_offers_a_retry(page: Page, shot) -> None:
    page.goto("/?model=no-such-model")
    expect(page.get_by_role("alert")).to_contain_text("no model or GPT “no-such-model”")
    _settings(page)
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionreset"))
    _send(page, "Hello?")
    error = page.locator("article.message.assistant").get_by_role("alert")
    expect(error).to_contain_text("The connection to the server was lost")
    shot(page, "lost")
    page.unroute("**/v1/chat/completions")
    error.get_by_role("button", name="Retry").click()
    _answered(page)
    expect(page.locator("article.message")).to_have_count(2)
    shot(page, "retried")


def test_a_page_that_did_not_load_offers_a_retry(page: Page, shot) -> None:
    page.route("**/v1/conversations", lambda route: route.abort("connectionreset"))
    page.goto("/")
    failure = page.get_by_role("alert")
    expect(failure).to_contain_text("The connection to the server was lost")
    shot(page, "not-loaded")
    page.unroute("**/v1/conversations")
    entries = page.evaluate("history.length")
    failure.get_by_role("button", name="Retry").click()  # the page again, through the router
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    expect(failure).to_have_count(0)
    assert page.evaluate("history.length") == entries


def test_a_failed_save_holds_the_later_turns_until_retry(page: Page, server: str, shot) -> None:
    page.goto("/")
    _settings(page)
    page.route("**/v1/conversations/*/turns", lambda route: route.abort("connectionreset"))
    italy, spain = "What is the capital of Italy?", "And of Spain?"
    _send(page, italy)
    _answered(page)
    notice = page.get_by_role("alert").filter(has_text="The conversation was not saved")
    expect(notice).to_contain_text("The connection to the server was lost")
    _send(page, spain)  # its save sends the first turn again, and is refused again: it waits
    _answered(page, 2)
    expect(notice).to_have_count(1)
    shot(page, "not-saved")
    assert _stored(page, server, _turns(0))["turns"] == 0  # the conversation is there (its address), no turn yet
    page.unroute("**/v1/conversations/*/turns")
    notice.get_by_role("button", name="Retry").click()
    stored = _stored(page, server, _turns(2))
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [italy, spain]
    expect(notice).to_have_count(0)
    expect(page.get_by_role("complementary", name="Conversations").get_by_role("link", name=re.compile(re.escape(italy)))).to_be_visible()


def test_arrowing_through_the_models_leaves_one_history_entry(page: Page) -> None:
    page.goto("/")
    entries = page.evaluate("history.length")
    picker = page.get_by_role("combobox", name="Model")
    picker.focus()
    picker.press("ArrowDown")  # Chromium changes the closed picker's model at each key, with a change event
    picker.press("ArrowDown")
    expect(picker).not_to_have_value("smollm2-135m-instruct")
    expect(page).to_have_url(re.compile(r"\?model=" + re.escape(picker.input_value())))
    assert page.evaluate("history.length") == entries  # an empty chat was replaced, not left behind


def test_start_from_a_gpts_conversation_starter_and_see_its_citations(page: Page, server: str, shot) -> None:
    starters = httpx.get(f"{server}/v1/gpts/{TUTOR}").json()["spec"]["conversation_starters"]
    page.goto(f"/?model={TUTOR}")
    expect(page.get_by_role("combobox", name="Model")).to_have_value(TUTOR)
    expect(page.get_by_label("System prompt")).to_be_hidden()  # a GPT's instructions are its system message
    _settings(page)
    group = page.get_by_role("group", name="Conversation starters")
    for starter in starters:
        expect(group.get_by_role("button", name=starter)).to_be_visible()
    shot(page, "starters")
    group.get_by_role("button", name="How do I share a GPT with someone?").click()
    answer = _answered(page)
    expect(group).to_be_hidden()
    citation = answer.get_by_role("button", name=re.compile(r"^gpts-guide\.md, lines? \d+"))
    expect(citation.first).to_be_visible()
    citation.first.click()
    expect(citation.first).to_have_attribute("aria-expanded", "true")
    expect(answer.locator("blockquote.quote").first).to_be_visible()
    shot(page, "cited")
    page.emulate_media(color_scheme="dark")
    shot(page, "cited-dark")
    stored = _stored(page, server, _turns(1))
    assert stored["slug"] == TUTOR
    assert stored["messages"][1]["citations"][0]["file"] == "gpts-guide.md"


def test_conversations_are_listed_renamed_resumed_and_deleted(page: Page, server: str, shot) -> None:
    page.goto("/")
    _settings(page)
    _send(page, "Name three colours.")
    _answered(page)
    conversations = page.get_by_role("complementary", name="Conversations")
    listed = conversations.get_by_role("link", name=re.compile("^Name three colours."))
    expect(listed).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Name three colours.")
    shot(page, "listed")

    page.get_by_role("button", name="Rename").click()
    page.get_by_role("textbox", name="Title").fill("Colours")
    page.get_by_role("textbox", name="Title").press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Colours")
    expect(conversations.get_by_role("link", name=re.compile("^Colours"))).to_be_visible()
    shot(page, "renamed")

    address = page.url
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New chat")
    expect(page.locator("article.message")).to_have_count(0)
    page.go_back()  # the back button returns to the conversation
    expect(page.get_by_role("heading", level=1)).to_have_text("Colours")
    page.goto(address)  # and its address resumes it
    expect(page.get_by_role("heading", level=1)).to_have_text("Colours")
    expect(page.locator("article.message.user .bubble")).to_have_text("Name three colours.")
    expect(page.locator("article.message.assistant .meta")).to_contain_text("tokens/s")  # kept with the answer
    _send(page, "Now name one more.")
    _answered(page, 2)
    _stored(page, server, _turns(2))
    shot(page, "resumed")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New chat")
    expect(conversations.get_by_role("link", name=re.compile("^Colours"))).to_have_count(0)
    shot(page, "deleted")
    assert "c=" not in page.url


def test_edit_a_sent_message(page: Page, server: str, shot) -> None:
    page.goto("/")
    _settings(page)
    italy = "What is the capital of Italy?"
    _send(page, italy)
    _answered(page)
    _send(page, "And of Spain?")
    _answered(page, 2)
    _stored(page, server, _turns(2))
    page.locator("article.message.user").first.get_by_role("button", name="Edit").click()
    editor = page.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value(italy)
    editor.fill("What is the capital of France?")
    shot(page, "editing")
    page.get_by_role("button", name="Save and send").click()
    _answered(page)
    expect(page.locator("article.message.user .bubble")).to_have_text(["What is the capital of France?"])
    shot(page, "edited")
    stored = _stored(page, server, lambda conversation: conversation["messages"][0]["content"] != italy)
    assert stored["turns"] == 1
    assert stored["messages"][0]["content"] == "What is the capital of France?"


def test_chat_on_a_phone(phone: Page, shot) -> None:
    def shot_at_end(step: str) -> None:  # the message box stays at the window's bottom: the shot's, at the page's end
        phone.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        shot(phone, step)

    phone.goto(f"/?model={TUTOR}")
    settings = phone.get_by_role("button", name="Settings")
    expect(settings).to_have_attribute("aria-expanded", "false")  # folded away on a phone, as the conversations
    expect(phone.get_by_label("Max tokens")).to_be_hidden()
    expect(phone.get_by_role("button", name="New chat")).to_be_hidden()
    shot_at_end("start")
    settings.click()
    _settings(phone)
    shot(phone, "settings")
    settings.click()
    phone.get_by_role("button", name="How do I share a GPT with someone?").click()
    _answered(phone)
    shot_at_end("answered")
    phone.get_by_role("button", name="Conversations").click()
    expect(phone.get_by_role("link", name=re.compile("^How do I share a GPT")).first).to_be_visible()
    shot(phone, "conversations")
    # Nothing is wider than the screen: the page does not scroll sideways.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
