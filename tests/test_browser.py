"""The chat page in headless Chromium (Debian's), driven by Playwright."""

import shutil
import time

import pytest
from playwright import sync_api

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(chromium, server, **context_options):
    context = chromium.new_context(**context_options)
    page = context.new_page()
    page.goto(server + "/")
    return page


def expect_replies(page, count: int, timeout: float = 30000):
    """Wait until count replies have finished streaming (the Send button is back)."""
    sync_api.expect(page.locator(".message.assistant:not(.thinking)")).to_have_count(count, timeout=timeout)
    sync_api.expect(page.locator("#send")).to_be_visible(timeout=timeout)


def delay_posts(page, seconds: float):
    """Hold the page's POSTs briefly, so the waiting state can be seen."""

    def hold(route):
        if route.request.method == "POST":
            time.sleep(seconds)
        route.continue_()

    page.route("**/*", hold)


def test_a_message_is_sent_without_reloading_and_the_reply_appears(chromium, server):
    page = open_page(chromium, server)
    page.evaluate("window.notReloaded = true")
    delay_posts(page, 0.5)
    page.fill("#textbox", "Hello from the browser")
    page.click("#send")
    sync_api.expect(page.locator(".message.assistant.thinking")).to_have_count(1)
    sync_api.expect(page.locator("#stop")).to_be_visible()
    sync_api.expect(page.locator("#send")).to_be_hidden()
    expect_replies(page, 1)
    assert page.locator(".message.user .text").inner_text() == "Hello from the browser"
    assert page.evaluate("window.notReloaded") is True
    sync_api.expect(page.locator("#send")).to_be_visible()
    assert page.input_value("#textbox") == ""
    page.keyboard.press("Enter")  # an empty box is refused in the page, with a message
    sync_api.expect(page.locator("#error")).to_have_text("Type a message first.")
    page.fill("#textbox", "Second message")
    page.press("#textbox", "Enter")
    expect_replies(page, 2)
    page.reload()
    sync_api.expect(page.locator(".message")).to_have_count(4)
    page.context.close()


def test_new_conversation_starts_over_and_the_page_still_works(chromium, server):
    page = open_page(chromium, server)
    page.fill("#textbox", "Remember this")
    page.click("#send")
    expect_replies(page, 1)
    page.click("#new-conversation")
    page.wait_for_load_state()
    sync_api.expect(page.locator(".message")).to_have_count(0)
    sync_api.expect(page.locator("#empty")).to_be_visible()
    page.fill("#textbox", "A fresh start")
    page.click("#send")
    expect_replies(page, 1)
    assert page.locator(".message.user .text").all_inner_texts() == ["A fresh start"]
    page.context.close()


def test_an_error_shows_and_the_text_is_given_back(chromium, server):
    page = open_page(chromium, server)
    too_long = "x" * 2001
    page.evaluate("document.getElementById('textbox').removeAttribute('maxlength')")
    page.fill("#textbox", too_long)
    page.click("#send")
    sync_api.expect(page.locator("#error")).to_contain_text("at most 2000 characters")
    sync_api.expect(page.locator(".message")).to_have_count(0)
    assert page.input_value("#textbox") == too_long
    page.context.close()


def test_without_javascript_the_form_posts_and_the_page_returns_with_the_reply(chromium, server):
    page = open_page(chromium, server, java_script_enabled=False)
    page.fill("#textbox", "No script here")
    page.click("#send")
    page.wait_for_load_state()
    sync_api.expect(page.locator(".message")).to_have_count(2)
    assert page.locator(".message.user .text").inner_text() == "No script here"
    page.context.close()


def test_the_layout_fits_a_phone_screen(chromium, server, tmp_path):
    page = open_page(chromium, server, viewport={"width": 375, "height": 700})
    page.fill("#textbox", "A message on a small screen")
    page.click("#send")
    expect_replies(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.locator("#send").bounding_box()["width"] > 0
    page.screenshot(path=str(tmp_path / "mobile.png"))
    page.context.close()


def test_html_in_a_reply_is_shown_as_text(chromium, html_server):
    page = open_page(chromium, html_server)
    # A function, so that Playwright runs it rather than calling the stub it would return.
    page.evaluate("() => { window.alerted = false; window.alert = () => { window.alerted = true; }; }")
    page.fill("#textbox", "say something")
    page.click("#send")
    reply = page.locator(".message.assistant:not(.thinking) .text")
    sync_api.expect(reply).to_contain_text("<script>", timeout=30000)
    assert page.locator("#conversation script").count() == 0
    assert page.evaluate("window.alerted") is False
    page.context.close()


def test_replies_stream_in_and_stop_ends_generation_on_the_server(chromium, embedded_server):
    from servers import engine_counts, wait_for_cancelled

    before = engine_counts(embedded_server)
    page = open_page(chromium, embedded_server)
    page.fill("#textbox", "Write a very long story about a dragon who learns to bake bread.")
    page.click("#send")
    page.wait_for_function(
        "() => Number(document.querySelector('.message.assistant')?.dataset.deltas || 0) >= 3", timeout=60000
    )
    page.click("#stop")
    sync_api.expect(page.locator(".message.assistant.stopped")).to_have_count(1)
    sync_api.expect(page.locator("#send")).to_be_visible()
    after = wait_for_cancelled(embedded_server, before)
    assert after["generated_tokens"] - before.get("generated_tokens", 0) < 40, "stopped long before 300 tokens"
    shown = page.locator(".message.assistant .text").inner_text()
    page.wait_for_timeout(500)
    assert page.locator(".message.assistant .text").inner_text() == shown and shown
    page.reload()
    sync_api.expect(page.locator(".message")).to_have_count(2)
    assert page.locator(".message.assistant .text").inner_text() == shown, "the server kept what was shown"
    page.context.close()
