"""What the page renders in headless Chromium: Markdown and its Copy buttons, XSS payloads, axe, widths, and what a
share link shows."""

import re
from pathlib import Path

import pytest
from browsers import expect_replies, send, user_texts
from playwright import sync_api

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
WATCH = """
window.__alerts = [];
window.__violations = [];
window.alert = (message) => window.__alerts.push(String(message));
document.addEventListener("securitypolicyviolation", (event) =>
  window.__violations.push(event.violatedDirective + " " + event.blockedURI));
"""


def test_a_markdown_reply_renders_and_its_code_and_text_copy(chromium, markdown_server):
    context = chromium.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(markdown_server + "/")
    send(page, "Show me some Markdown", 1)
    reply = page.locator(".message.assistant")
    sync_api.expect(reply.locator("ul > li")).to_have_text(["first item", "second item"])
    sync_api.expect(reply.locator("table td")).to_have_count(2)
    sync_api.expect(reply.locator("strong")).to_have_text("bold")
    sync_api.expect(reply.locator("figure.code figcaption")).to_contain_text("python")
    sync_api.expect(reply.locator(".stats")).to_contain_text("tokens/s")
    reply.locator(".copy-code").click()
    sync_api.expect(reply.locator(".copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "print('<script>alert(4)</script>')\n"
    reply.locator(".copy-reply").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("Some **bold** text")
    context.close()


XSS_MESSAGE = "\n".join(
    [
        "<script>alert(11)</script>",
        "<img src=x onerror=alert(12)>",
        "[run](javascript:alert(13)) [page](data:text/html,<script>alert(14)</script>)",
        "```",
        "<script>alert(15)</script>",
        "```",
        "| a |",
        "|---|",
        "| <img src=x onerror=alert(16)> |",
    ]
)


def assert_nothing_ran_or_rendered(page, javascript: bool):
    conversation = page.locator("#conversation")
    for selector in ["script", "img", "iframe", "object", "embed", "[onerror]", "[onclick]", "[onload]", "[style]"]:
        assert conversation.locator(selector).count() == 0, selector
    assert conversation.locator("a[href^='javascript'], a[href^='data'], a[href^='JAVASCRIPT']").count() == 0
    assert conversation.locator("a:not([rel='noopener noreferrer nofollow'])").count() == 0
    assert conversation.locator("a[href='https://example.com/docs']").count() >= 1, "the safe link is a link"
    assert user_texts(page)[0] == XSS_MESSAGE, "a user message stays plain text"
    assert conversation.locator(".message.assistant table td").first.inner_text() == "<img src=x onerror=alert(2)>"
    if javascript:
        assert page.evaluate("window.__alerts") == [] and page.evaluate("window.__violations") == []


@pytest.mark.parametrize("javascript", [True, False], ids=["with-javascript", "without-javascript"])
def test_xss_payloads_in_replies_and_messages_never_run(chromium, markdown_server, javascript):
    context = chromium.new_context(java_script_enabled=javascript)
    context.add_init_script(WATCH)
    page = context.new_page()
    page.goto(markdown_server + "/")
    page.fill("#textbox", XSS_MESSAGE)
    if javascript:
        page.click("#send")
        expect_replies(page, 1)
    else:
        page.click("#send")
        page.wait_for_load_state()
    assert_nothing_ran_or_rendered(page, javascript)
    page.reload()
    assert_nothing_ran_or_rendered(page, javascript)
    context.close()


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_axe_finds_no_serious_accessibility_violations(chromium, markdown_server, color_scheme):
    # axe is injected as a script tag, which the page's own policy rightly refuses: only this context bypasses it.
    context = chromium.new_context(bypass_csp=True, color_scheme=color_scheme)
    page = context.new_page()
    page.goto(markdown_server + "/")
    send(page, "Show me some Markdown", 1)
    page.click("#share summary")
    page.click("#share-conversation")  # the page comes back with the new link and the list of links, to check too
    page.click(".settings summary")
    assert serious_violations(page) == []
    context.close()


def serious_violations(page) -> list:
    """Run axe on the page and return its serious and critical violations."""
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        "async () => (await axe.run(document)).violations"
        ".map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' '))}))"
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def test_a_share_link_shows_the_snapshot_safely_and_continues_as_the_visitors_own(chromium, markdown_server):
    owner = chromium.new_context().new_page()
    owner.goto(markdown_server + "/")
    send(owner, XSS_MESSAGE, 1)
    owner.click("#share summary")
    owner.click("#share-conversation")
    link = owner.input_value("#share-url")
    send(owner, "Said after sharing", 2)
    visitor = chromium.new_context()
    visitor.add_init_script(WATCH)
    page = visitor.new_page()
    page.goto(link)
    sync_api.expect(page.locator(".message")).to_have_count(2)  # the snapshot: nothing said after it
    assert_nothing_ran_or_rendered(page, javascript=True)
    page.click("#continue-shared")
    page.wait_for_url(re.compile(r"/c/[0-9a-f]{32}$"))
    send(page, "My own follow-up", 2)
    assert user_texts(page) == [XSS_MESSAGE, "My own follow-up"]
    owner.reload()
    assert user_texts(owner) == [XSS_MESSAGE, "Said after sharing"], "the original is the owner's, untouched"
    checked = chromium.new_context(bypass_csp=True).new_page()  # axe needs its script in: only here
    checked.goto(link)
    assert serious_violations(checked) == []
    for context in (owner.context, visitor, checked.context):
        context.close()


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_screenshots_at_desktop_and_phone_widths(chromium, markdown_server, tmp_path, width, height, color_scheme):
    shots = tmp_path  # the README's own come from python -m docs.screenshot, on the embedded model
    context = chromium.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
    page = context.new_page()
    page.goto(markdown_server + "/")
    send(page, "Show me some Markdown", 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    name = f"{'desktop' if width > 500 else 'phone'}-{color_scheme}.png"
    page.screenshot(path=str(shots / name))
    if width < 500:  # the conversation list hides behind a button, and opens over the chat
        assert not page.locator("#sidebar").is_visible()
        page.click(".open-sidebar")
        sync_api.expect(page.locator("#sidebar")).to_be_visible()
        sync_api.expect(page.locator("#conversation-list a")).to_have_count(1)
        page.click(".close-sidebar")
        sync_api.expect(page.locator("#sidebar")).to_be_hidden()
    context.close()
