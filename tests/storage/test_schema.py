"""Who may use a conversation: its owner only; a caller that is nobody, only conversations without an owner."""

import sqlalchemy as sa

from palaver.storage.schema import conversations, metadata, visible_to


def test_someone_sees_only_their_own_and_nobody_only_the_unowned():
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    now = sa.func.current_timestamp()
    with engine.begin() as connection:
        for conversation_id, owner in (("a", "browser:a"), ("b", "key:b"), ("open", None)):
            connection.execute(
                conversations.insert().values(id=conversation_id, owner=owner, created_at=now, updated_at=now)
            )

    def seen_by(owner):
        with engine.connect() as connection:
            return sorted(connection.execute(sa.select(conversations.c.id).where(visible_to(owner))).scalars())

    assert seen_by("browser:a") == ["a"] and seen_by("key:b") == ["b"]
    assert seen_by(None) == ["open"], "an unowned id opens for callers that are nobody, and for them only"
    assert seen_by("browser:stranger") == []
