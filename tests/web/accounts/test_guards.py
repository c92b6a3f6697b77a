"""Refusals with accounts: pages send nobody to sign in and a pending person to wait; APIs answer JSON."""

import pytest
from signing_in import sign_up

from palaver.web.accounts.guards import safe_next


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/c/abc?before=50", True),
        ("/", True),
        ("//evil.example", False),
        ("/\\evil", False),
        ("/\t/evil.example", False),
        ("https://x", False),
        (None, False),
    ],
)
def test_only_a_path_on_this_server_is_a_place_to_go_back_to(accounts_app, target, kept):
    with accounts_app.test_request_context():
        assert safe_next(target) == (target if kept else "/")


def test_nobody_is_sent_to_sign_in_from_a_page_and_refused_with_json_on_the_apis(accounts_app):
    client = accounts_app.test_client()
    page = client.get("/c/abc?before=50")
    assert page.status_code == 303 and page.headers["Location"] == "/sign-in?next=/c/abc?before%3D50"
    assert client.post("/", data={"textbox": "hi"}).headers["Location"] == "/sign-in"
    streamed = client.post("/", data={"textbox": "hi"}, headers={"Accept": "text/event-stream"})
    assert streamed.status_code == 401 and streamed.get_json()["error"]["code"] == "invalid_api_key"
    for path in ("/api/conversations", "/v1/models", "/ollama/api/tags"):
        refused = client.get(path)
        assert refused.status_code == 401 and "sign in" in refused.get_data(as_text=True)
    assert client.get("/models").status_code == 303  # the library: admins only


def test_a_pending_person_waits_on_every_page_and_is_refused_on_every_api(admin, accounts_app):
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    for path in ("/", "/account", "/models"):
        assert "Waiting for approval" in grace.get(path).get_data(as_text=True)
    assert grace.get("/v1/models").get_json()["error"]["code"] == "awaiting_approval"
    assert admin.get("/models").status_code == 200
