"""The model picker in headless Chromium, each test as a person of its own: a conversation starts on the model
chosen, and the sidebar filters by it; a thinking model's reasoning shows apart from its answer; the page's
controls fit a desktop and a phone, signed in (the account's links in the sidebar) and signed out."""

import pytest
from browsers import expect_replies
from playwright import sync_api
from servers import procfile_server
from signing_in import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_models_server(chat_model, html_model, thinking_gguf_model, tmp_path_factory):
    """A server with accounts anyone may open and three models: the chat Llama (the default), the HTML replier and
    the thinking Llama."""
    env = {
        "PALAVER_AUTH": "accounts",
        "PALAVER_OPEN_SIGNUP": "1",
        "PALAVER_MODELS": f"chat={chat_model},html={html_model},think={thinking_gguf_model}",
        "PALAVER_CACHE_DIR": str(tmp_path_factory.mktemp("two-models")),
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_MAX_NEW_TOKENS": "8",
    }
    with procfile_server(env, wait_for="/healthz", timeout=120, wait_for_exit=False) as running:
        yield running.url


def signed_up_page(chromium, server, login: str, **context_options):
    """Sign a new person up in a new context of its own, through the form; return the page of a new conversation."""
    page = chromium.new_context(**context_options).new_page()
    page.goto(server + "/sign-up")
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.click("#sign-up")
    sync_api.expect(page).to_have_url(server + "/")
    return page


def test_the_picker_starts_a_conversation_on_its_model_and_the_sidebar_filters_by_model(chromium, two_models_server):
    page = signed_up_page(chromium, two_models_server, "picker")
    picker = page.locator("#model")
    sync_api.expect(picker.locator("option")).to_have_count(3)
    sync_api.expect(picker).to_have_value("chat")
    picker.select_option("html")
    page.fill("#textbox", "Say something")
    page.click("#send")
    expect_replies(page, 1)
    sync_api.expect(page.locator(".message.assistant .text")).to_contain_text("alert(1)")  # the html model's reply
    sync_api.expect(page.locator("#model-name")).to_have_text("html")  # the conversation shows its model
    sync_api.expect(page.locator("#model")).to_have_count(0)
    page.click("#new-conversation")
    page.wait_for_load_state()
    sync_api.expect(page.locator("#model")).to_have_value("chat")
    page.fill("#textbox", "Hello")
    page.click("#send")
    expect_replies(page, 1)
    sync_api.expect(page.locator("#model-name")).to_have_text("chat")
    models = page.locator("#conversation-list .conversation-model")
    sync_api.expect(models).to_have_text(["chat", "html"])  # newest first, each with its model
    page.locator("#model-filter").select_option("html")
    page.locator(".search button").click()
    page.wait_for_load_state()
    sync_api.expect(models).to_have_text(["html"])
    page.locator("#conversation-list a").first.click()
    page.wait_for_load_state()
    sync_api.expect(page.locator("#model-name")).to_have_text("html")
    page.fill("#textbox", "Again")
    page.click("#send")
    expect_replies(page, 2)  # the conversation goes on on its own model
    sync_api.expect(page.locator(".message.assistant .text").last).to_contain_text("alert(1)")
    page.context.close()


def test_a_thinking_models_reasoning_shows_collapsed_above_its_answer_and_after_a_reload(chromium, two_models_server):
    page = signed_up_page(chromium, two_models_server, "thinker")
    page.locator("#model").select_option("think")
    page.fill("#textbox", "Hello")
    page.click("#send")
    expect_replies(page, 1)
    for shown in ("streamed", "reloaded"):
        reply = page.locator(".message.assistant")
        thinking = reply.locator("details.reasoning")
        sync_api.expect(thinking.locator("summary")).to_have_text("Thinking")
        sync_api.expect(thinking.locator(".reasoning-text")).to_have_text("some thought")
        assert thinking.evaluate("details => details.open") is False, f"collapsed, {shown}"
        sync_api.expect(reply.locator(":scope > .text")).to_have_text("the answer")
        assert "thought" not in reply.locator(":scope > .text").inner_text(), f"the answer is apart, {shown}"
        page.reload()
    page.context.close()


def control_widths(page) -> dict[str, float]:
    """Return the rendered width of each of the sidebar's controls, by its selector."""
    selectors = ["#new-conversation", "#search", "#model-filter", ".search button"]
    return {selector: page.locator(selector).bounding_box()["width"] for selector in selectors}


def no_sideways_scrolling(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no scrolling sideways"


@pytest.mark.parametrize("width, height", [(1200, 800), (375, 667)], ids=["desktop", "phone"])
def test_the_sidebars_controls_the_account_links_and_the_composer_fit_when_signed_in(
    chromium, two_models_server, tmp_path, width, height
):
    name = "desktop" if width > 500 else "phone"
    viewport = {"width": width, "height": height}
    page = signed_up_page(chromium, two_models_server, f"layout-{name}", viewport=viewport)
    no_sideways_scrolling(page, width)
    composer = page.locator("#chat-form").bounding_box()
    assert abs(composer["y"] + composer["height"] - height) <= 4, "a new conversation's message box sits at the bottom"
    page.screenshot(path=str(tmp_path / f"signed-in-{name}-new-conversation.png"))
    if name == "phone":  # the list opens over the chat
        page.click(".open-sidebar")
        sync_api.expect(page.locator("#sidebar")).to_be_visible()
    widths = control_widths(page)
    sidebar = page.locator("#sidebar").bounding_box()
    assert widths["#search"] >= 150 and widths["#model-filter"] >= 80, widths
    assert all(shown <= sidebar["width"] for shown in widths.values()), widths
    for link in ("#account-link", "#sign-out"):  # the account's links sit inside the sidebar
        box = page.locator(link).bounding_box()
        assert box["x"] >= sidebar["x"] and box["x"] + box["width"] <= sidebar["x"] + sidebar["width"], (link, box)
    no_sideways_scrolling(page, width)
    page.screenshot(path=str(tmp_path / f"signed-in-{name}-sidebar.png"))
    page.context.close()


@pytest.mark.parametrize("width, height", [(1200, 800), (375, 667)], ids=["desktop", "phone"])
def test_the_sign_in_and_sign_up_forms_fit_when_signed_out(chromium, two_models_server, tmp_path, width, height):
    name = "desktop" if width > 500 else "phone"
    page = chromium.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(two_models_server + "/")
    sync_api.expect(page).to_have_url(two_models_server + "/sign-in")
    for form in ("sign-in", "sign-up"):
        page.goto(f"{two_models_server}/{form}")
        box = page.locator(f"#{form}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (form, box)
        no_sideways_scrolling(page, width)
        page.screenshot(path=str(tmp_path / f"signed-out-{name}-{form}.png"))
    page.context.close()
