"""Take the README's screenshots: the embedded model from the Procfile, at desktop and phone widths, light and dark.

Usage: .venv/bin/python -m docs.screenshot
"""

from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browsers import CHROMIUM, CHROMIUM_ARGS, expect_replies
from tests.servers import procfile_server

SHOTS = Path(__file__).resolve().parent / "screenshots"
MESSAGES = ["Hi there! What can you help me with?", "Give me three tips for writing clear emails, as a list."]
VIEWPORTS = {"desktop": {"width": 1200, "height": 760}, "phone": {"width": 390, "height": 844}}


def main() -> None:
    SHOTS.mkdir(exist_ok=True)
    with (
        procfile_server({"PALAVER_TEMPERATURE": "0", "PALAVER_MAX_NEW_TOKENS": "120"}) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        first = browser.new_context(viewport=VIEWPORTS["desktop"])
        page = first.new_page()
        page.goto(server.url + "/")
        for count, message in enumerate(MESSAGES, start=1):
            page.fill("#textbox", message)
            page.click("#send")
            expect_replies(page, count, timeout=180000)
        address, cookies = page.url, first.storage_state()  # the same browser, seen four ways
        first.close()
        for width, viewport in VIEWPORTS.items():
            for scheme in ("light", "dark"):
                context = browser.new_context(viewport=viewport, color_scheme=scheme, storage_state=cookies)
                shown = context.new_page()
                shown.goto(address)
                shown.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
                shown.screenshot(path=str(SHOTS / f"{width}-{scheme}.png"))
                context.close()
        browser.close()


if __name__ == "__main__":
    main()
