"""The admin's page of people: for admins alone; approving lets a person in, disabling shuts them out at once."""

import re

from signing_in import bearer, sign_in, sign_up

from palaver.storage.quotas import Quota


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


def test_an_admin_makes_an_admin_and_deletes_a_person_with_their_conversations(admin, accounts_app):
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    people = accounts_app.extensions["palaver"].people
    grace_id = people.by_login("grace").id
    admin.post(f"/admin/people/{grace_id}/approve")
    assert grace.post("/api/chat", json={"message": "hi", "max_new_tokens": 2}).status_code == 200
    store = accounts_app.extensions["palaver"].chat.store
    assert store.count_owned(f"person:{grace_id}") == 1
    assert admin.post(f"/admin/people/{grace_id}/role", data={"role": "admin"}).status_code == 303
    assert people.get(grace_id).admin and grace.get("/admin/usage").status_code == 200
    ada_id = people.by_login("ada").id
    assert admin.post(f"/admin/people/{ada_id}/delete").status_code == 400, "an admin never deletes themselves"
    assert admin.post(f"/admin/people/{grace_id}/delete").status_code == 303
    assert people.get(grace_id) is None and store.count_owned(f"person:{grace_id}") == 0
    assert grace.get("/").status_code == 303, "their session went with them"
    assert admin.post(f"/admin/people/{grace_id}/delete").status_code == 404


def test_an_admin_runs_groups_and_sets_quotas_through_the_forms(admin, accounts_app):
    quotas, people = accounts_app.extensions["palaver"].quotas.store, accounts_app.extensions["palaver"].people
    ada_id = people.by_login("ada").id
    assert admin.post("/admin/groups", data={"name": "class"}).status_code == 303
    (group,) = quotas.groups.everything()
    assert admin.post(f"/admin/groups/{group.id}/rename", data={"name": "class of 2026"}).status_code == 303
    assert admin.post(f"/admin/groups/{group.id}/members", data={"person_id": ada_id}).status_code == 303
    page = admin.get("/admin/groups").get_data(as_text=True)
    assert 'data-group="class of 2026"' in page and 'aria-label="Remove ada from class of 2026"' in page
    model = accounts_app.extensions["palaver"].backend.names[0]
    form = {"tokens_per_day": "2,000", "tokens_per_month": "", "some_models": "1", "models": [model, "unknown"]}
    assert admin.post(f"/admin/quotas/group/{group.id}", data=form).status_code == 303
    assert quotas.effective(ada_id) == Quota(tokens_per_day=2000, models=(model,))
    assert "2,000 tokens a day" in admin.get("/account").get_data(as_text=True)
    refused = admin.post(f"/admin/quotas/person/{ada_id}", data={"requests_per_minute": "ten"})
    assert refused.status_code == 400 and 'id="quota-error"' in refused.get_data(as_text=True)
    assert admin.post(f"/admin/quotas/person/{ada_id}", data={"requests_per_minute": "10"}).status_code == 303
    assert 'id="effective">2,000 tokens a day; 10 requests a minute' in admin.get(
        f"/admin/quotas/person/{ada_id}"
    ).get_data(as_text=True)
    assert admin.get("/admin/quotas/team/x").status_code == 404
    assert admin.post(f"/admin/groups/{group.id}/members/{ada_id}/remove").status_code == 303
    assert admin.post(f"/admin/groups/{group.id}/delete").status_code == 303
    assert quotas.groups.everything() == [] and quotas.effective(ada_id) == Quota(requests_per_minute=10)
    member = accounts_app.test_client()
    sign_up(member, "grace")
    people.set_state(people.by_login("grace").id, "active")
    for path in ("/admin/groups", "/admin/usage", f"/admin/quotas/person/{ada_id}"):
        assert member.get(path).status_code == 403
    assert member.post("/admin/groups", data={"name": "mine"}).status_code == 403


def test_an_admin_resets_a_persons_password_once_and_revokes_their_keys(admin, accounts_app):
    people = accounts_app.extensions["palaver"].people
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    grace_id = people.by_login("grace").id
    admin.post(f"/admin/people/{grace_id}/approve")
    made = grace.post("/account/keys", data={"name": "script"}).get_data(as_text=True)
    secret = re.search(r'id="new-key-secret" value="([^"]+)"', made).group(1)
    page = admin.get(f"/admin/people/{grace_id}").get_data(as_text=True)
    assert "script" in page and secret[:10] in page and secret not in page and "never" in page
    assert 'id="temporary-password"' not in page
    reset = admin.post(f"/admin/people/{grace_id}/reset-password")
    assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
    temporary = re.search(r'id="temporary-password" value="([^"]+)"', reset.get_data(as_text=True)).group(1)
    assert grace.get("/").status_code == 303, "their sessions ended"
    assert sign_in(accounts_app.test_client(), "grace").status_code == 401, "the old password is gone"
    assert sign_in(grace, "grace", temporary).status_code == 303
    assert 'id="temporary-password"' not in admin.get(f"/admin/people/{grace_id}").get_data(as_text=True)
    key_id = re.search(rf"/admin/people/{grace_id}/keys/([0-9a-f]+)/revoke", page).group(1)
    assert admin.post(f"/admin/people/{grace_id}/keys/{key_id}/revoke").status_code == 303
    assert accounts_app.test_client().get("/v1/models", headers=bearer(secret)).status_code == 401
    assert admin.post(f"/admin/people/{grace_id}/keys/{key_id}/revoke").status_code == 404
    assert grace.get(f"/admin/people/{grace_id}").status_code == 403
    assert grace.post(f"/admin/people/{people.by_login('ada').id}/reset-password").status_code == 403
    assert admin.post("/admin/people/no-such-person/reset-password").status_code == 404
