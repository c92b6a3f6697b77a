"""Retention: conversations idle too long go, and past the cap, the largest client pools shrink first."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from palaver.storage.schema import conversations, messages


def fair_level(sizes: list[int], cap: int) -> int:
    """Return the largest per-pool size that keeps the pools, each cut down to it, within cap in all.

    Trimming every pool to this level removes conversations only from the largest pools: a client that floods
    the store shrinks its own pool, and a client holding fewer than the level loses nothing.
    """
    if sum(sizes) <= cap:
        return max(sizes, default=0)
    low, high = 0, max(sizes)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= cap:
            low = middle
        else:
            high = middle - 1
    return low


def sweep(engine: sa.Engine, cap: int, cutoff: datetime) -> int:
    """Delete conversations idle since cutoff, then trim the largest client pools past cap; return how many."""
    with engine.begin() as connection:
        idle = sa.select(conversations.c.id).where(conversations.c.updated_at < cutoff)
        doomed: list[str] = list(connection.execute(idle).scalars())
        pool = sa.func.coalesce(conversations.c.client, "")
        counted = sa.select(pool, sa.func.count()).where(conversations.c.updated_at >= cutoff).group_by(pool)
        sizes = {str(row[0]): int(row[1]) for row in connection.execute(counted)}
        level = fair_level(list(sizes.values()), cap)
        for client, size in sizes.items():
            if size > level:  # this pool's least recently used go, down to the level every pool fits under
                oldest = (
                    sa.select(conversations.c.id)
                    .where(pool == client, conversations.c.updated_at >= cutoff)
                    .order_by(conversations.c.updated_at, conversations.c.id)
                    .limit(size - level)
                )
                doomed += connection.execute(oldest).scalars()
        for start in range(0, len(doomed), 500):
            chunk = doomed[start : start + 500]
            connection.execute(messages.delete().where(messages.c.conversation_id.in_(chunk)))
            connection.execute(conversations.delete().where(conversations.c.id.in_(chunk)))
    return len(doomed)


def idle_cutoff(now: datetime, idle_seconds: float) -> datetime:
    return now - timedelta(seconds=idle_seconds)
