"""Stored responses: each whole, with its input items and the conversation a later response continues."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from palaver.core.types import Message, ToolCall
from palaver.storage.records import as_utc, utc_now
from palaver.storage.retention import fair_level
from palaver.storage.schema import responses


def visible_to(owner: str | None) -> sa.ColumnElement[bool]:
    """Select the responses owner may use, as a conversation is: its own, or for nobody only the unowned."""
    return responses.c.owner == owner if owner else responses.c.owner.is_(None)


def message_from(data: dict[str, Any]) -> Message:
    """Read back a message as Message.as_dict wrote it."""
    calls = tuple(
        ToolCall(call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in data.get("tool_calls", ())
    )
    return Message(data["role"], data["content"], tool_calls=calls, tool_call_id=data.get("tool_call_id"))


@dataclass(frozen=True)
class StoredResponse:
    """A response as stored: its object, the input items it was given, and the conversation it leaves."""

    id: str
    owner: str | None
    client: str | None
    created_at: datetime
    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[Message]


class ResponseStore:
    """Keep responses in the database beside the conversations, bounded by the same retention sweep."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def put(self, stored: StoredResponse) -> None:
        """Store a response; JSON escapes every control character, so no NUL reaches PostgreSQL."""
        with self.engine.begin() as connection:
            connection.execute(
                responses.insert().values(
                    id=stored.id,
                    owner=stored.owner,
                    client=stored.client,
                    created_at=stored.created_at,
                    body=json.dumps(stored.body, ensure_ascii=False),
                    input_items=json.dumps(stored.input_items, ensure_ascii=False),
                    conversation=json.dumps([message.as_dict() for message in stored.conversation], ensure_ascii=False),
                )
            )

    def get(self, response_id: str, owner: str | None = None) -> StoredResponse | None:
        """Return a response owner may use; None for one that is unknown, deleted, swept or another's."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(responses).where(responses.c.id == response_id, visible_to(owner))
            ).first()
        if row is None:
            return None
        return StoredResponse(
            id=row.id,
            owner=row.owner,
            client=row.client,
            created_at=as_utc(row.created_at),
            body=json.loads(row.body),
            input_items=json.loads(row.input_items),
            conversation=[message_from(message) for message in json.loads(row.conversation)],
        )

    def delete(self, response_id: str, owner: str | None = None) -> bool:
        """Delete a response owner may use; return whether there was one."""
        with self.engine.begin() as connection:
            deleted = connection.execute(responses.delete().where(responses.c.id == response_id, visible_to(owner)))
        return deleted.rowcount > 0

    def sweep(self, cap: int, cutoff: datetime) -> int:
        """Delete responses made before cutoff, then trim the largest client pools past cap; return how many."""
        with self.engine.begin() as connection:
            removed = connection.execute(responses.delete().where(responses.c.created_at < cutoff)).rowcount
            pool = sa.func.coalesce(responses.c.client, "")
            sizes = {
                str(row[0]): int(row[1]) for row in connection.execute(sa.select(pool, sa.func.count()).group_by(pool))
            }
            level = fair_level(list(sizes.values()), cap)
            for client, size in sizes.items():
                if size > level:  # this pool's oldest go, down to the level every pool fits under
                    oldest = (
                        sa.select(responses.c.id)
                        .where(pool == client)
                        .order_by(responses.c.created_at, responses.c.id)
                        .limit(size - level)
                    )
                    doomed: list[str] = list(connection.execute(oldest).scalars())
                    for start in range(0, len(doomed), 500):
                        chunk = doomed[start : start + 500]
                        removed += connection.execute(responses.delete().where(responses.c.id.in_(chunk))).rowcount
        return removed
