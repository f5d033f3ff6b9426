"""The Models page in the browser: the bundled model with its context length, size and chat template, a link to chat
with it; on a phone and in dark mode."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

MODEL = "smollm2-135m-instruct"
# The first look at a model that is not loaded reads its files: a fine-tuned one (another test's) takes seconds more
# on a busy machine. The page says it is reading them meanwhile.
READ_TIMEOUT_MS = 60_000


def test_the_bundled_model_and_its_chat_template(page: Page, shot):
    page.goto("/models")
    served = page.get_by_role("region", name=re.compile("^Served"))
    model = served.get_by_role("article", name=MODEL, exact=True)
    expect(model).to_contain_text("Base model", timeout=READ_TIMEOUT_MS)
    expect(model).to_contain_text("8,192 tokens")  # SmolLM2's context length
    expect(model).to_contain_text(re.compile(r"Size\s*\d+ MB"))
    expect(model).to_contain_text("GGUF, bundled with gpts")
    expect(model.get_by_role("link", name=f"Chat with {MODEL}")).to_have_attribute("href", f"/?model={MODEL}")
    template = model.get_by_label(f"Chat template of {MODEL}")
    expect(template).to_be_hidden()
    shot(page, "models")

    model.get_by_text("Chat template").click()
    expect(template).to_contain_text("<|im_start|>")
    shot(page, "template")
    page.emulate_media(color_scheme="dark")
    shot(page, "template-dark")


def test_models_on_a_phone(phone: Page, shot):
    phone.goto("/models")
    model = phone.get_by_role("article", name=MODEL, exact=True)
    expect(model).to_contain_text("8,192 tokens", timeout=READ_TIMEOUT_MS)
    model.get_by_text("Chat template").click()
    expect(model.get_by_label(f"Chat template of {MODEL}")).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px screen"
    shot(phone, "phone")
