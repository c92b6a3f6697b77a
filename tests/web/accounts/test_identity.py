"""Who is signed in: a new session token at every sign-in, the browser's own id kept, a planted cookie worthless."""

from signing_in import sign_in, sign_up


def session_of(client) -> dict:
    with client.session_transaction() as session:
        return dict(session)


def test_every_sign_in_issues_a_new_token_and_ends_the_one_the_cookie_held(admin, accounts_app):
    first = session_of(admin)["person"]
    assert sign_in(admin, "ada").status_code == 303
    second = session_of(admin)["person"]
    assert second != first and admin.get("/").status_code == 200
    replayed = accounts_app.test_client()
    with replayed.session_transaction() as session:
        session["person"] = first
    assert replayed.get("/").status_code == 303  # the old token signs nobody in


def test_a_cookie_planted_before_sign_in_never_becomes_the_victims_session(admin, accounts_app):
    mallory = accounts_app.test_client()
    sign_up(mallory, "mallory")
    people = accounts_app.extensions["palaver"].people
    people.set_state(people.by_login("mallory").id, "active")
    planted = session_of(mallory)["person"]
    victim = accounts_app.test_client()
    with victim.session_transaction() as session:  # as if mallory had set the victim's cookie to hers
        session["person"] = planted
        session["conversation_id"] = "mallorys-conversation"
    sign_in(victim, "ada")
    after = session_of(victim)
    assert after["person"] != planted and "conversation_id" not in after
    assert mallory.get("/").status_code == 303  # the planted token ended with the sign-in that dropped it
    sent = victim.post("/api/chat", json={"message": "my secret", "max_new_tokens": 2}).get_json()
    sign_in(mallory, "mallory")
    assert mallory.get("/api/conversations").get_json()["conversations"] == []
    assert mallory.get(f"/api/conversations/{sent['conversation_id']}").status_code == 404
    assert [c["conversation_id"] for c in victim.get("/api/conversations").get_json()["conversations"]] == [
        sent["conversation_id"]
    ]


def test_the_browsers_own_id_outlives_sign_in_and_sign_out_and_nothing_else_does(admin, accounts_app):
    client = accounts_app.test_client()
    with client.session_transaction() as session:
        session["owner"] = "0" * 32
        session["preset"] = "default"
    sign_in(client, "ada")
    assert session_of(client).keys() == {"owner", "person", "_permanent"}
    client.post("/sign-out")
    assert session_of(client) == {"owner": "0" * 32}
    assert client.get("/").status_code == 303
