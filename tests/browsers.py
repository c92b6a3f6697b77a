"""Headless Chromium (Debian's) for the page's tests and docs.screenshot: pages, and waiting for replies."""

from __future__ import annotations

import shutil

from playwright import sync_api

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


def open_page(chromium, server, **context_options):
    """Open the page of server in a new context of its own."""
    context = chromium.new_context(**context_options)
    page = context.new_page()
    page.goto(server + "/")
    return page


def expect_replies(page, count: int, timeout: float = 30000):
    """Wait until count replies have finished streaming (the Send button is back)."""
    sync_api.expect(page.locator(".message.assistant:not(.thinking)")).to_have_count(count, timeout=timeout)
    sync_api.expect(page.locator("#send")).to_be_visible(timeout=timeout)


def send(page, text: str, replies: int):
    """Type a message, send it with Enter, and wait for the reply it makes the replies-th."""
    page.fill("#textbox", text)
    page.press("#textbox", "Enter")
    expect_replies(page, replies)


def user_texts(page):
    """Return the texts of the user's messages on the page."""
    return page.locator(".message.user .text").all_inner_texts()
