"""Take the README's screenshot: the embedded model served from the Procfile, in headless Chromium.

Usage: .venv/bin/python -m docs.screenshot
"""

from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.servers import procfile_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, expect_replies

ROOT = Path(__file__).resolve().parent.parent

MESSAGES = ["Hi there! What can you help me with?", "Give me one tip for writing clear emails."]


def main() -> None:
    with (
        procfile_server({"PALAVER_TEMPERATURE": "0", "PALAVER_MAX_NEW_TOKENS": "48"}) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 640})
        page.goto(server.url + "/")
        for count, message in enumerate(MESSAGES, start=1):
            page.fill("#textbox", message)
            page.click("#send")
            expect_replies(page, count, timeout=120000)
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
        browser.close()


if __name__ == "__main__":
    main()
