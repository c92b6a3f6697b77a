"""People someone else vouched for (an identity provider, a trusted proxy): found by identity, made on first sight."""

from __future__ import annotations

from palaver.core.errors import Forbidden
from palaver.storage.records import Person
from palaver.web.services import services


def vetted_person(identity: str, login: str, display_name: str = "") -> Person:
    """Return the person an identity names, made active on first sight; PALAVER_ADMIN_EMAILS makes and keeps admins.

    Whoever vouched for them (the provider's allowed domains or groups, the proxy's own rules) was the approval,
    so nobody waits for an admin. A disabled person stays out.
    """
    store, admins = services().people, services().settings.admin_email_list
    person = store.by_identity(identity)
    if person is None:
        person = store.create(login, identity=identity, display_name=display_name, open_signup=True)
        if person.admin and admins and person.login not in admins:
            store.set_role(person.id, "member")  # the store makes the first person the admin; the setting names them
            return reread(person)
    elif person.state == "disabled":
        raise Forbidden("this account is disabled; ask an admin", code="account_disabled")
    if person.login in admins and not (person.admin and person.active):
        store.set_role(person.id, "admin")
        store.set_state(person.id, "active")
        return reread(person)
    return person


def reread(person: Person) -> Person:
    again = services().people.get(person.id)
    assert again is not None  # made or found just now
    return again
