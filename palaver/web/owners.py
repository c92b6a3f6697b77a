"""Who a request acts for: the person signed in (with accounts), the API key it uses, or else its browser's cookie."""

from __future__ import annotations

import re
import secrets

from flask import session

from palaver.web.security import accounts_on, keys_required, request_person, sent_key_id, signed_in_key_id

BROWSER_ID = re.compile(r"[0-9a-f]{32}")


def current_owner(*, create: bool = False) -> str | None:
    """Return the owner of the current request, giving a browser an id first when create; None if anonymous."""
    person = request_person()
    if person is not None:  # the same conversations from every browser and key of theirs
        return person.owner if person.active else None
    key = sent_key_id() or signed_in_key_id()
    if key is not None:
        return f"key:{key}"
    if keys_required() or accounts_on():  # with keys set, only a key owns conversations; with accounts, a person
        return None
    browser = session.get("owner")
    if isinstance(browser, str) and BROWSER_ID.fullmatch(browser):
        return f"browser:{browser}"
    if not create:
        return None
    browser = secrets.token_hex(16)
    session["owner"] = browser
    session.permanent = True
    return f"browser:{browser}"
