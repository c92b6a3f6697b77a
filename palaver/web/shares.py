"""Share links: made and revoked by a conversation's owner; opened read-only, and continued as a copy, by others."""

from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, session, url_for

from palaver.core.errors import ConversationBusy, Forbidden, NotFound
from palaver.core.types import CALLER
from palaver.storage.shares import MAX_LIVE_SHARES, ShareStore, ShareSummary
from palaver.web.api.routes import api_error
from palaver.web.owners import current_owner
from palaver.web.pages import page_error, render_chat
from palaver.web.security import require_api_key, require_sign_in
from palaver.web.services import services

share_links = Blueprint("share_links", __name__)
share_links.before_request(require_sign_in)
share_links.register_error_handler(Exception, page_error)
share_links_api = Blueprint("share_links_api", __name__, url_prefix="/api")
share_links_api.before_request(require_api_key)
share_links_api.register_error_handler(Exception, api_error)

NO_SUCH_LINK = "this share link does not exist or was revoked"


def share_store() -> ShareStore:
    return services().chat.store.share_links


def make_share(conversation_id: str) -> tuple[str, ShareSummary]:
    """Snapshot one of the caller's conversations behind a new link; return its token and the share."""
    owner = current_owner()
    found = services().chat.find(conversation_id, owner)  # a stranger's is a 404, as everywhere
    if owner is None:  # an unowned conversation is open to whoever has its id: nobody could revoke its links
        raise Forbidden("only a conversation's owner can share it: send an API key, or use the page", code="no_owner")
    made = share_store().create(found, owner)
    if made is None:
        raise ConversationBusy(
            f"this conversation has {MAX_LIVE_SHARES} share links already; revoke one first", code="too_many_shares"
        )
    return made


def link_to(token: str) -> str:
    return url_for("share_links.open_shared", token=token, _external=True)


@share_links.get("/s/<token>")
def open_shared(token: str):
    """Show a conversation as it was when shared, read-only; a revoked link is as unknown as one never made."""
    shared = share_store().open(token)
    if shared is None:
        raise NotFound(NO_SUCH_LINK)
    response = make_response(render_template("shared.html", shared=shared, token=token))
    response.headers["Cache-Control"] = "no-store"  # a revoked link must not live on in a cache
    return response


@share_links.post("/s/<token>/continue")
def continue_shared(token: str):
    """Copy a shared snapshot into a new conversation of the visitor's own, and open it."""
    copied = share_store().copy(token, current_owner(create=True), CALLER.get().client or None)
    if copied is None:
        raise NotFound(NO_SUCH_LINK)
    session["conversation_id"] = copied
    session.permanent = True
    return redirect(url_for("pages.open_conversation", conversation_id=copied), code=303)


@share_links.post("/c/<conversation:conversation_id>/share")
def share_conversation(conversation_id: str):
    """Make a share link from the page, and show it this once beside the conversation."""
    token, _ = make_share(conversation_id)
    return render_chat(conversation_id, new_share=link_to(token))


@share_links.post("/c/<conversation:conversation_id>/shares/<share_id>/revoke")
def revoke_share_from_page(conversation_id: str, share_id: str):
    if not share_store().revoke(share_id, current_owner(), conversation_id):
        raise NotFound(NO_SUCH_LINK)
    return redirect(url_for("pages.open_conversation", conversation_id=conversation_id), code=303)


@share_links_api.post("/conversations/<conversation:conversation_id>/shares")
def create_share(conversation_id: str):
    token, share = make_share(conversation_id)
    return {**share.model_dump(mode="json"), "token": token, "url": link_to(token)}, 201


@share_links_api.get("/conversations/<conversation:conversation_id>/shares")
def list_shares(conversation_id: str):
    owner = current_owner()
    if not services().chat.store.exists(conversation_id, owner):  # a stranger's is a 404, not an empty list
        raise NotFound(f"conversation '{conversation_id}' does not exist or has expired", param="conversation_id")
    return {"shares": [share.model_dump(mode="json") for share in share_store().listed(conversation_id, owner)]}


@share_links_api.delete("/shares/<share_id>")
def revoke_share(share_id: str):
    if not share_store().revoke(share_id, current_owner()):
        raise NotFound("this share does not exist, was revoked, or is not yours", param="share_id")
    return {"id": share_id, "revoked": True}
