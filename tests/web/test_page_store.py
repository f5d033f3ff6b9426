"""The store in the browser: find a GPT by search and rate it, export and import its bundle, filter by category, look
through its versions, and read it all on a phone and in dark mode. The server is shared by every web test, so each
test makes its own GPTs, under names no other test uses."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import Locator, Page, expect


def unique_word() -> str:
    """A word no other GPT has: searching for it finds only this test's GPTs."""
    return f"zq{uuid.uuid4().hex[:10]}"


def create_gpt(server: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {"name": name, "slug": f"{name.split()[0].lower()}-{uuid.uuid4().hex[:8]}",
            "description": f"{name}: a test GPT that answers briefly.", "instructions": "Answer in one sentence.",
            "category": "writing", "tags": ["test"], **spec}
    response = httpx.post(f"{server}/v1/gpts", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def card(page: Page, name: str, within: Locator | None = None) -> Locator:
    """The card of the GPT named `name` (in `within`, a part of the page)."""
    return (within or page).get_by_role("listitem").filter(has=page.get_by_role("link", name=name, exact=True))


def test_find_by_search_and_rate(page: Page, server: str, shot):
    word = unique_word()
    gpt = create_gpt(server, f"Haiku {word}", description="Writes haiku about anything you name.",
                     conversation_starters=["A haiku about rain", "One about coffee"])
    slug = gpt["slug"]
    rated = httpx.post(f"{server}/v1/gpts/{slug}/ratings", json={"stars": 2, "user": "ada"})
    assert rated.status_code == 200, rated.text

    page.goto("/store")
    expect(page.get_by_role("heading", name="Store", level=1)).to_be_visible()
    shot(page, "store")

    page.get_by_label("Search GPTs").press_sequentially(word, delay=20)
    found = card(page, f"Haiku {word}", within=page.get_by_role("region", name=f"Results for “{word}”"))
    expect(found).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/store\?q={word}$"))  # the search is in the address, to share
    expect(found).to_contain_text("2.0")
    expect(found).to_contain_text("1 rating")
    expect(found).to_contain_text("0 conversations")
    shot(page, "searched")

    found.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/store/{slug}$"))
    expect(page.get_by_role("heading", name=f"Haiku {word}", level=1)).to_be_visible()
    main = page.get_by_role("main")  # the top bar has a "Chat" link too
    expect(main.get_by_role("link", name="Chat")).to_have_attribute("href", f"/?model={slug}")
    expect(main.get_by_role("link", name="Edit in builder")).to_have_attribute("href", f"/builder/{slug}")
    expect(page.get_by_text("A haiku about rain")).to_be_visible()
    page.locator("summary", has_text="Instructions").click()  # folded away until asked for
    expect(page.get_by_text("Answer in one sentence.")).to_be_visible()
    shot(page, "gpt-page")

    # The stars are a radio group: the arrow keys move along it.
    page.get_by_role("radio", name="1 star").check()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("radio", name="2 stars")).to_be_checked()
    page.get_by_role("radio", name="4 stars").check()
    page.get_by_label("Review (optional)").fill("Short and sweet.")
    shot(page, "rating")
    page.get_by_role("button", name="Rate").click()
    expect(page.get_by_text("Thanks: you rated it 4 stars.")).to_be_visible()
    standing = page.get_by_role("region", name="Rating and use")
    expect(standing).to_contain_text("3.0")  # (2 + 4) / 2
    expect(standing).to_contain_text("2 ratings")
    shot(page, "rated")

    stored = httpx.get(f"{server}/v1/gpts/{slug}").json()
    assert (stored["rating"], stored["ratings"]) == (3.0, 2)

    page.goto("/store")  # a rating is activity: it trends
    trending = page.get_by_role("region", name="Trending this week")
    expect(trending.get_by_role("link", name=f"Haiku {word}")).to_be_visible()
    shot(page, "trending")


def test_export_delete_and_import_a_bundle(page: Page, server: str, shot, tmp_path):
    word = unique_word()
    gpt = create_gpt(server, f"Bundle {word}", category="productivity", tags=["bundle", "test"])
    slug = gpt["slug"]
    knowledge = httpx.post(f"{server}/v1/gpts/{slug}/knowledge",
                           files={"file": ("notes.md", b"# Notes\n\nThe office opens at nine.\n", "text/markdown")})
    assert knowledge.status_code == 200, knowledge.text
    rows = b'{"text": "I love it", "label": "positive"}\n{"text": "I hate it", "label": "negative"}\n'
    evaluation = httpx.post(f"{server}/v1/gpts/{slug}/evaluation", files={"file": ("eval.jsonl", rows)})
    assert evaluation.status_code == 200, evaluation.text
    score = httpx.post(f"{server}/v1/gpts/{slug}/evaluate", timeout=120)
    assert score.status_code == 200, score.text

    page.goto(f"/store/{slug}")
    expect(page.get_by_role("heading", name=f"Bundle {word}", level=1)).to_be_visible()
    expect(page.get_by_role("cell", name="notes.md")).to_be_visible()
    standing = page.get_by_role("region", name="Rating and use")
    expect(standing).to_contain_text(f"Measured score: {score.json()['metric']}")
    expect(standing).to_contain_text("over 2 examples")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    assert bundle.name == f"{slug}.gpt" and bundle.stat().st_size > 0
    shot(page, "exported")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/store$"))
    expect(page.get_by_role("status").filter(has_text=f"Deleted Bundle {word}.")).to_be_visible()
    assert httpx.get(f"{server}/v1/gpts/{slug}").status_code == 404
    shot(page, "deleted")

    # Not a bundle: refused, and the page says why.
    page.get_by_label("Import a .gpt file").set_input_files(
        files=[{"name": "broken.gpt", "mimeType": "application/zip", "buffer": b"not a zip file"}])
    expect(page.get_by_role("alert")).to_contain_text("Import failed: broken.gpt is not a .gpt bundle")
    shot(page, "import-refused")

    page.get_by_label("Import a .gpt file").set_input_files(bundle)
    expect(page).to_have_url(re.compile(rf"/store/{slug}$"))
    expect(page.get_by_role("heading", name=f"Bundle {word}", level=1)).to_be_visible()
    expect(page.get_by_role("list", name="Tags")).to_contain_text("#bundle")
    expect(page.get_by_role("cell", name="notes.md")).to_be_visible()  # the bundle carries its files
    assert httpx.get(f"{server}/v1/gpts/{slug}").json()["spec"]["category"] == "productivity"
    shot(page, "imported")


def test_category_filter(page: Page, server: str, shot):
    word = unique_word()
    code = create_gpt(server, f"Linter {word}", category="programming")["spec"]["name"]
    prose = create_gpt(server, f"Editor {word}", category="writing")["spec"]["name"]
    categories = httpx.get(f"{server}/v1/gpt_spec").json()["categories"]

    page.goto("/store")
    select = page.get_by_label("Category")
    expect(select.locator("option")).to_have_count(len(categories) + 1)  # and "All categories"
    select.select_option("programming")
    expect(page).to_have_url(re.compile(r"/store\?category=programming$"))
    expect(page.get_by_role("heading", name="Programming", level=2)).to_be_visible()
    expect(card(page, code)).to_be_visible()
    expect(card(page, prose)).to_have_count(0)
    shot(page, "programming")

    page.get_by_label("Search GPTs").fill(word)
    expect(page.get_by_role("heading", name=f"Results for “{word}” in Programming")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="GPT found")).to_have_text("1 GPT found")
    shot(page, "search-in-category")

    # The address is the search: opened anew, it shows the same.
    page.goto(f"/store?q={word}&category=writing")
    expect(page.get_by_label("Category")).to_have_value("writing")
    expect(page.get_by_label("Search GPTs")).to_have_value(word)
    expect(card(page, prose)).to_be_visible()
    expect(card(page, code)).to_have_count(0)
    page.get_by_label("Category").select_option("lifestyle")
    expect(page.get_by_text(f"No GPT matches “{word}” in Lifestyle.")).to_be_visible()
    shot(page, "nothing-found")

    page.get_by_label("Search GPTs").fill("?!")  # the server's refusal, shown where the results go
    expect(page.get_by_role("alert")).to_contain_text("The search has no words")
    shot(page, "no-words")


def test_versions_view_and_restore(page: Page, server: str, shot):
    word = unique_word()
    slug = create_gpt(server, f"Versioned {word}", description="The first description.")["slug"]
    edited = httpx.patch(f"{server}/v1/gpts/{slug}",
                         json={"description": "The second description.", "note": "reworded"})
    assert edited.status_code == 200, edited.text

    page.goto(f"/store/{slug}")
    versions = page.get_by_role("region", name="Versions")
    expect(versions.get_by_role("listitem")).to_have_count(2)
    expect(versions).to_contain_text("reworded")
    expect(page.get_by_text("The second description.")).to_be_visible()
    versions.get_by_role("link", name="Version 1").click()
    expect(page).to_have_url(re.compile(rf"/store/{slug}\?version=1$"))
    expect(page.get_by_text("The first description.")).to_be_visible()
    expect(page.get_by_role("note")).to_contain_text("version 1; the current one is version 2")
    shot(page, "old-version")

    page.get_by_role("note").get_by_role("button", name="Restore version 1").click()
    expect(page).to_have_url(re.compile(rf"/store/{slug}$"))
    expect(page.get_by_role("region", name="Versions").get_by_role("listitem")).to_have_count(3)
    expect(page.get_by_text("The first description.")).to_be_visible()
    assert httpx.get(f"{server}/v1/gpts/{slug}").json()["current_version"] == 3
    shot(page, "restored")


def test_unknown_gpt(page: Page, shot):
    page.goto("/store/no-such-gpt-here")
    expect(page.get_by_role("heading", name="No GPT named “no-such-gpt-here”")).to_be_visible()
    shot(page, "unknown")
    page.get_by_role("link", name="Back to the store").click()
    expect(page).to_have_url(re.compile(r"/store$"))
    expect(page.get_by_role("heading", name="All GPTs")).to_be_visible()


def test_connection_lost_then_retry(page: Page, shot):
    page.route("**/v1/gpts?*", lambda route: route.abort())  # the server goes away mid-visit
    page.goto("/store")
    expect(page.get_by_role("alert")).to_contain_text("The connection to the server was lost")
    shot(page, "lost")
    page.unroute("**/v1/gpts?*")
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("heading", name="All GPTs")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)


def fits(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_phone_layout(phone: Page, server: str, shot):
    word = unique_word()
    first = create_gpt(server, f"Pocket {word}", description="A long description that has to wrap on a narrow "
                       "screen without pushing the page sideways, however long the words are.")
    create_gpt(server, f"Compact {word}")
    phone.goto(f"/store?q={word}")
    cards = phone.locator(".gpt-card")
    expect(cards).to_have_count(2)
    top, below = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert top["x"] == below["x"] and below["y"] >= top["y"] + top["height"]  # stacked, one per row
    assert top["width"] <= 360
    assert fits(phone)
    shot(phone, "store")

    phone.goto(f"/store/{first['slug']}")
    expect(phone.get_by_role("heading", name=f"Pocket {word}", level=1)).to_be_visible()
    expect(phone.get_by_role("radio", name="5 stars")).to_be_visible()
    assert fits(phone)
    shot(phone, "gpt-page")


@pytest.fixture
def dark(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 860}, color_scheme="dark")
    yield context.new_page()
    context.close()


def test_dark_mode(dark: Page, server: str, shot):
    word = unique_word()
    gpt = create_gpt(server, f"Night {word}", conversation_starters=["Say something dark"])
    httpx.post(f"{server}/v1/gpts/{gpt['slug']}/ratings", json={"stars": 5, "user": "owl"}).raise_for_status()
    dark.goto(f"/store?q={word}")
    expect(card(dark, f"Night {word}")).to_be_visible()
    assert dark.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    shot(dark, "store")
    dark.goto(f"/store/{gpt['slug']}")
    expect(dark.get_by_role("heading", name=f"Night {word}", level=1)).to_be_visible()
    shot(dark, "gpt-page")
