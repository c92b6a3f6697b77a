"""The admin's page of people: for admins alone; approving lets a person in, disabling shuts them out at once."""

import re

from signing_in import bearer, sign_up


def person_id(page: str, login: str, action: str) -> str:
    form = rf'/admin/people/([0-9a-f]+)/{action}"[^>]*>\s*<button[^>]*aria-label="\w+ {login}"'
    return re.search(form, page).group(1)


def test_an_admin_approves_a_person_and_disabling_ends_their_sessions_and_keys_at_once(admin, accounts_app):
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    listed = admin.get("/admin/people")
    page = listed.get_data(as_text=True)
    assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store"
    assert page.index('data-login="grace"') < page.index('data-login="ada"')  # the one waiting comes first
    assert admin.post(f"/admin/people/{person_id(page, 'grace', 'approve')}/approve").status_code == 303
    assert grace.get("/").status_code == 200
    made = grace.post("/account/keys", data={"name": "script"}).get_data(as_text=True)
    secret = re.search(r'id="new-key-secret" value="([^"]+)"', made).group(1)
    page = admin.get("/admin/people").get_data(as_text=True)
    assert admin.post(f"/admin/people/{person_id(page, 'grace', 'disable')}/disable").status_code == 303
    assert grace.get("/").status_code == 303
    assert accounts_app.test_client().get("/v1/models", headers=bearer(secret)).status_code == 401
    assert "disabled" in admin.get("/admin/people").get_data(as_text=True)


def test_the_page_is_for_admins_alone_and_an_admin_cannot_disable_themselves(admin, accounts_app):
    assert accounts_app.test_client().get("/admin/people").headers["Location"] == "/sign-in?next=/admin/people"
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    people = accounts_app.extensions["palaver"].people
    people.set_state(people.by_login("grace").id, "active")
    assert grace.get("/admin/people").status_code == 403
    assert grace.post(f"/admin/people/{people.by_login('grace').id}/approve").status_code == 403
    refused = admin.post(f"/admin/people/{people.by_login('ada').id}/disable")
    assert refused.status_code == 400 and people.by_login("ada").active
    assert admin.post("/admin/people/no-such-person/approve").status_code == 404
