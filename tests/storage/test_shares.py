"""Share links on real SQLite and PostgreSQL: a snapshot behind a hashed token, revoked, copied, and deleted."""

import sqlalchemy as sa
from stored import store_turn

from palaver.core.types import Reply, Usage
from palaver.storage.schema import shares
from palaver.storage.shares import MAX_LIVE_SHARES, SHARE_ID_CHARS, token_hash


def shared_conversation(store, owner="browser:a"):
    store_turn(store, "c", "first <b>question</b>", "first answer", owner=owner)
    store_turn(store, "c", "second", Reply("second answer", Usage(5, 2), 0, "stop", reasoning="a thought"), owner=owner)
    return store.get("c", owner)


def test_a_link_shows_the_conversation_as_it_was_and_the_database_holds_only_its_hash(store):
    links = store.share_links
    token, share = links.create(shared_conversation(store), "browser:a")
    store_turn(store, "c", "said after sharing", owner="browser:a")
    store.rename("c", "browser:a", "Renamed after sharing")
    shown = links.open(token)
    assert [(r.role, r.content) for r in shown.records] == [
        ("user", "first <b>question</b>"),
        ("assistant", "first answer"),
        ("user", "second"),
        ("assistant", "second answer"),
    ]
    assert shown.records[3].reasoning == "a thought" and shown.title == "first <b>question</b>"
    assert len(token) >= 43 and share.id == token_hash(token)[:SHARE_ID_CHARS]
    with store.engine.connect() as connection:
        stored = connection.execute(sa.select(shares)).one()
    assert token not in str(tuple(stored)) and stored.token_hash == token_hash(token)
    assert links.open(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert links.open("") is None and links.open("x" * 500) is None


def test_only_who_may_use_the_conversation_lists_and_revokes_its_shares(store):
    links = store.share_links
    conversation = shared_conversation(store)
    token, share = links.create(conversation, "browser:a")
    assert [s.id for s in links.listed("c", "browser:a")] == [share.id]
    for stranger in ("browser:b", None):
        assert links.listed("c", stranger) == [] and not links.revoke(share.id, stranger)
    assert not links.revoke(share.id, "browser:a", conversation_id="other")
    assert not links.revoke("%", "browser:a") and not links.revoke(share.id[:-1], "browser:a")
    assert links.open(token) is not None
    assert links.revoke(share.id, "browser:a", conversation_id="c")
    assert links.open(token) is None and links.listed("c", "browser:a") == []
    assert not links.revoke(share.id, "browser:a"), "revoked once"
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(shares.c.snapshot)).scalar_one() == "[]", "the copy is gone"


def test_a_copy_is_a_new_conversation_of_its_own_and_the_original_is_untouched(store):
    links = store.share_links
    token, _ = links.create(shared_conversation(store), "browser:a")
    copied = links.copy(token, "browser:b", "address:1")
    assert copied != "c" and store.get(copied, "browser:a") is None
    mine = store.get(copied, "browser:b")
    assert [r.content for r in mine.records] == [r.content for r in links.open(token).records]
    assert mine.turns == 2 and mine.title == "first <b>question</b>"
    store_turn(store, copied, "my own follow-up", owner="browser:b")
    assert store.get("c", "browser:a").turns == 2 and len(links.open(token).records) == 4
    assert [c.id for c in store.owned("browser:b", 10)] == [copied]
    assert links.copy("unknown-token", "browser:b") is None


def test_shares_are_capped_per_conversation_and_go_with_it(store):
    links = store.share_links
    conversation = shared_conversation(store)
    made = [links.create(conversation, "browser:a") for _ in range(MAX_LIVE_SHARES)]
    assert links.create(conversation, "browser:a") is None
    assert links.revoke(made[0][1].id, "browser:a") and links.create(conversation, "browser:a") is not None
    assert store.delete("c", "browser:a")
    assert all(links.open(token) is None for token, _ in made)
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(shares)).scalar_one() == 0
