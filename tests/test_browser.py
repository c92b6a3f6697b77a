"""The chat page in headless Chromium: sending, streaming, Stop, the sidebar, editing and the keyboard.

What the page renders (Markdown, XSS payloads, accessibility, widths) is in test_browser_rendering.py, and the
model picker in test_browser_models.py, so that three processes can share the browser tests.
"""

import re
from pathlib import Path

import pytest
import requests
from browsers import expect_replies, open_page, send, user_texts
from playwright import sync_api

pytestmark = pytest.mark.browser


def hold_posts(page) -> list:
    """Hold the page's POSTs until the test lets them go, so the waiting state can be seen however slow the machine."""
    held: list = []

    def hold(route):
        if route.request.method == "POST" and not held:
            held.append(route)  # answered when the test calls held[0].continue_()
        else:
            route.continue_()

    page.route("**/*", hold)
    return held


def test_a_message_is_sent_without_reloading_and_the_reply_appears(chromium, server):
    page = open_page(chromium, server)
    page.evaluate("window.notReloaded = true")
    held = hold_posts(page)
    page.fill("#textbox", "Hello from the browser")
    page.click("#send")
    sync_api.expect(page.locator(".message.assistant.thinking")).to_have_count(1)
    sync_api.expect(page.locator("#stop")).to_be_visible()
    sync_api.expect(page.locator("#send")).to_be_hidden()
    held[0].continue_()
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


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no javascript"])
def test_a_link_to_a_strangers_conversation_opens_nothing_and_the_visitors_message_stays_theirs(
    chromium, server, javascript
):
    planted = requests.post(server + "/api/chat", json={"message": "Welcome to support."}, timeout=30).json()
    conversation_id = planted["conversation_id"]
    context = chromium.new_context(java_script_enabled=javascript)
    page = context.new_page()
    answer = page.goto(f"{server}/c/{conversation_id}")
    assert answer.status == 404
    sync_api.expect(page.locator("body")).not_to_contain_text("Welcome to support.")
    page.goto(server + "/")
    sync_api.expect(page.locator(".message")).to_have_count(0)
    page.fill("#textbox", "my password is hunter2")
    page.click("#send")
    if javascript:
        expect_replies(page, 1)
    else:
        page.wait_for_load_state()
        sync_api.expect(page.locator(".message")).to_have_count(2)
    read = requests.get(f"{server}/api/conversations/{conversation_id}", timeout=10).json()
    assert [m["content"] for m in read["messages"] if m["role"] == "user"] == ["Welcome to support."]
    listed = page.request.get(server + "/api/conversations").json()["conversations"]
    assert len(listed) == 1 and listed[0]["conversation_id"] != conversation_id
    context.close()


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


def exported(page, server):
    conversation_id = page.url.rsplit("/", 1)[-1]
    return page.request.get(f"{server}/api/conversations/{conversation_id}/export").json()["messages"]


def test_the_sidebar_creates_switches_renames_searches_and_deletes(chromium, server):
    page = open_page(chromium, server)
    send(page, "Plan a picnic", 1)
    sync_api.expect(page).to_have_url(re.compile(r"/c/[0-9a-f]{32}$"))
    picnic = page.url
    sync_api.expect(page.locator("#conversation-list a")).to_have_text(["Plan a picnic"])
    page.click("#new-conversation")
    page.wait_for_load_state()
    send(page, "Learn some Rust", 1)
    sync_api.expect(page.locator("#conversation-list a")).to_have_text(["Learn some Rust", "Plan a picnic"])
    page.click("#conversation-list >> text=Plan a picnic")
    page.wait_for_url(picnic)
    assert user_texts(page) == ["Plan a picnic"]
    sync_api.expect(page.locator("#conversation-list a[aria-current=page]")).to_have_text("Plan a picnic")
    page.click(".rename summary")
    page.fill("#title", "Picnic on Saturday")
    page.click(".rename button[type=submit]")
    sync_api.expect(page.locator("#conversation-title")).to_have_text("Picnic on Saturday")
    page.fill("#search", "rust")
    page.press("#search", "Enter")
    sync_api.expect(page.locator("#conversation-list a")).to_have_text(["Learn some Rust"])
    page.goto(picnic)
    page.reload()
    assert user_texts(page) == ["Plan a picnic"] and page.locator(".message.assistant").count() == 1
    stranger = open_page(chromium, server)
    response = stranger.goto(picnic)
    assert response.status == 404 and "Plan a picnic" not in stranger.content()
    stranger.context.close()
    page.click(".delete summary")
    page.check(".delete input[name=confirm]")
    page.click("#delete-conversation")
    page.wait_for_url(server + "/")
    sync_api.expect(page.locator("#conversation-list a")).to_have_text(["Learn some Rust"])
    assert page.request.get(picnic).status == 404
    page.context.close()


def test_regenerate_and_edit_replace_the_last_turn_in_storage(chromium, server):
    page = open_page(chromium, server)
    send(page, "first question", 1)
    send(page, "second question", 2)
    before = exported(page, server)
    page.click(".regenerate button")
    expect_replies(page, 2)
    after = exported(page, server)
    assert [m["role"] for m in after] == ["user", "assistant"] * 2 and after[:2] == before[:2]
    assert after[2]["content"] == "second question"
    assert after[3]["created_at"] > before[3]["created_at"], "the reply was replaced, not appended"
    page.click(".edit summary")
    page.fill("#edit-text", "second question, edited")
    page.click(".edit button[type=submit]")
    expect_replies(page, 2)
    sync_api.expect(page.locator(".message.user .text")).to_have_text(["first question", "second question, edited"])
    edited = exported(page, server)
    assert [m["content"] for m in edited if m["role"] == "user"] == ["first question", "second question, edited"]
    assert len(edited) == 4
    page.reload()
    assert user_texts(page) == ["first question", "second question, edited"]
    page.click(".export summary")
    with page.expect_download() as download:
        page.click("#export-markdown")
    text = Path(download.value.path()).read_text()
    assert text.startswith("# first question") and "second question, edited" in text
    page.context.close()


def test_the_main_flow_works_from_the_keyboard_alone(chromium, server):
    page = open_page(chromium, server)
    assert page.evaluate("document.activeElement.id") == "textbox"
    page.keyboard.type("Typed with the keyboard")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("on two lines")
    page.keyboard.press("Enter")
    expect_replies(page, 1)
    assert user_texts(page) == ["Typed with the keyboard\non two lines"]
    assert page.evaluate("document.activeElement.id") == "textbox", "focus returns to the composer"
    page.evaluate("document.activeElement.blur()")
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "() => { const e = document.activeElement; return e.id || e.className || e.textContent.trim(); }"
            )
        )
    for control in ["skip-link", "new-conversation", "search", "textbox", "send", "copy-reply"]:
        assert control in reached, (control, reached)
    assert {"Rename", "Export", "Delete", "Settings", "Edit", "Regenerate"} <= set(reached), reached
    page.focus(".settings summary")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#temperature")).to_be_visible()
    page.focus("#max_new_tokens")
    page.keyboard.type("2")
    page.focus("#textbox")
    page.keyboard.type("Short, please")
    page.keyboard.press("Enter")
    expect_replies(page, 2)
    assert exported(page, server)[-1]["completion_tokens"] <= 2
    page.context.close()


def test_a_bad_setting_gets_the_apis_message_and_keeps_the_text(chromium, server):
    page = open_page(chromium, server)
    page.click(".settings summary")
    page.fill("#temperature", "9")
    send_text = "hello with a bad temperature"
    page.fill("#textbox", send_text)
    page.press("#textbox", "Enter")
    sync_api.expect(page.locator("#error")).to_contain_text("temperature")
    assert page.input_value("#textbox") == send_text and page.locator(".message").count() == 0
    page.context.close()
