"""Who is signed in: the person a request's session cookie or key names, and signing a person in and out."""

from __future__ import annotations

from flask import g, request, session

from palaver.storage.people import PeopleStore
from palaver.storage.records import Person
from palaver.web.accounts.header import person_of_proxy_header
from palaver.web.services import services

SESSION_TOKEN = "person"  # the session cookie's field: the token of the browser's row in person_sessions
BROWSER_OWNER = "owner"  # the field naming the browser's own id (palaver/web/owners.py), kept across a sign-in


def people() -> PeopleStore:
    return services().people


def person_of_request(sent_key: str | None) -> Person | None:
    """Return the person a request acts for: by the key it sends, else its session or proxy; cached per request."""
    if "person" not in g:
        if sent_key is not None:
            g.person = people().keys.person(sent_key)
        elif services().settings.auth == "header":
            g.person = person_of_proxy_header()
        else:
            g.person = person_of_session()
    return g.person


def person_of_session() -> Person | None:
    token = session.get(SESSION_TOKEN)
    return people().sessions.person(token) if isinstance(token, str) else None


def sign_person_in(person: Person) -> None:
    """Sign a person in on this browser with a new session token: what the cookie held before is dropped.

    The one way in, whatever checked who they are (a password, an identity provider, a proxy). A new token at
    every sign-in means a cookie planted before it (session fixation) never becomes a signed-in one. The browser's
    own id stays, so that its conversations can be offered to the account; they are never taken unasked.
    """
    end_this_session()
    session[SESSION_TOKEN] = people().sessions.start(person.id, request.user_agent.string)
    session.permanent = True
    g.person = person


def sign_out() -> None:
    """End this browser's session; the browser's own id stays, as it would without accounts."""
    end_this_session()
    g.pop("person", None)


def end_this_session() -> None:
    """End the session the cookie names and empty the cookie of all but the browser's own id."""
    token = session.get(SESSION_TOKEN)
    if isinstance(token, str):
        people().sessions.end(token)
    browser = session.get(BROWSER_OWNER)
    session.clear()
    if browser is not None:
        session[BROWSER_OWNER] = browser


def sign_out_everywhere(person: Person) -> None:
    """End every session of a person, this browser's too; their keys go on working until revoked."""
    people().sessions.end_all(person.id)
    sign_out()
