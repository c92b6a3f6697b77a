"""Exports: a whole conversation as JSON with every detail, or as a readable Markdown document."""

from helpers import assert_error, start_conversation


def test_export_as_json_has_every_message_with_its_details(browser):
    conversation_id = start_conversation(browser, "export me")
    response = browser.get(f"/api/conversations/{conversation_id}/export")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == f'attachment; filename="conversation-{conversation_id}.json"'
    exported = response.get_json()
    assert exported["conversation_id"] == conversation_id and exported["title"] == "export me"
    user, reply = exported["messages"]
    assert (user["role"], user["content"], reply["role"]) == ("user", "export me", "assistant")
    assert user["prompt_tokens"] > 0 and reply["completion_tokens"] == 2 and reply["finish_reason"] == "length"
    assert reply["created_at"].endswith("Z")


def test_export_as_markdown_is_a_readable_document(browser):
    conversation_id = start_conversation(browser, "export <me> as *markdown*")
    response = browser.get(f"/api/conversations/{conversation_id}/export", query_string={"format": "markdown"})
    assert response.status_code == 200 and response.mimetype == "text/markdown"
    assert response.headers["Content-Disposition"].endswith(f'filename="conversation-{conversation_id}.md"')
    document = response.get_data(as_text=True)
    assert document.startswith("# export <me> as *markdown*\n")
    assert "### User · " in document and "### Assistant · " in document and "cut off at the token limit" in document
    assert "\nexport <me> as *markdown*\n" in document
    assert_error(browser.get(f"/api/conversations/{conversation_id}/export?format=pdf"), 400, "format", "markdown")
