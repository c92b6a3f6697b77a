"""Who a request acts for: the API key it uses, or else the browser its signed session cookie names."""

from __future__ import annotations

import re
import secrets

from flask import session

from palaver.web.security import keys_required, sent_key_id, signed_in_key_id

BROWSER_ID = re.compile(r"[0-9a-f]{32}")


def current_owner(*, create: bool = False) -> str | None:
    """Return the owner of the current request, giving a browser an id first when create; None if anonymous."""
    key = sent_key_id() or signed_in_key_id()
    if key is not None:
        return f"key:{key}"
    if keys_required():  # with keys set, only a key owns conversations
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
