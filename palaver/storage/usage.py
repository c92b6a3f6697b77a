"""Usage per person, UTC day and model: generations and tokens, taken at admission and settled when a reply ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa

from palaver.storage.records import utc_now
from palaver.storage.schema import usage

T = TypeVar("T")


@dataclass(frozen=True)
class Spent:
    """What a person has spent on one model (or on all, model empty) today and this month."""

    person_id: str
    model: str
    requests_today: int = 0
    tokens_today: int = 0
    requests_this_month: int = 0
    tokens_this_month: int = 0


def day_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def add_to(connection: sa.Connection, person_id: str, day: str, model: str, requests: int, tokens: int) -> None:
    """Add to a row of usage, creating it: update first, then insert, which works on every database.

    The caller's transaction makes the two one step; a row inserted by another at the same moment makes the insert
    fail, and the caller tries again.
    """
    key = (usage.c.person_id == person_id, usage.c.day == day, usage.c.model == model)
    updated = connection.execute(
        usage.update().where(*key).values(requests=usage.c.requests + requests, tokens=usage.c.tokens + tokens)
    )
    if not updated.rowcount:
        connection.execute(
            usage.insert().values(person_id=person_id, day=day, model=model, requests=requests, tokens=tokens)
        )


class Usage:
    """Record and sum what people spend: the admin's report and the quotas' admission both read it."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self._clock = clock

    def add(self, person_id: str, model: str, *, requests: int = 0, tokens: int = 0, day: str | None = None) -> None:
        """Add requests and tokens (a settlement's difference may be negative) to a day's row (today's) for model."""
        day = day or day_of(self._clock())
        self._retried(lambda connection: add_to(connection, person_id, day, model, requests, tokens))

    def take(self, person_id: str, model: str, tokens: int, over: Callable[[int, int], int]) -> tuple[str, int]:
        """Add a request and tokens to today's row; return the day and the tokens kept.

        over sees the person's tokens today and this month with these added, and returns how many to give back, or
        raises to undo it all. Added before it is checked, in one transaction: a request admitted elsewhere at the
        same moment on the same model waits for this one's row, and is counted.
        """
        now = self._clock()
        day = day_of(now)

        def reserve(connection: sa.Connection) -> int:
            add_to(connection, person_id, day, model, 1, tokens)
            given_back = over(*self._tokens(connection, person_id, now))
            if given_back:
                add_to(connection, person_id, day, model, 0, -given_back)
            return tokens - given_back

        return day, self._retried(reserve)

    def _retried(self, work: Callable[[sa.Connection], T]) -> T:
        """Run work in a transaction, once more if a row it inserted was inserted by another at the same moment."""
        for attempt in range(2):
            try:
                with self.engine.begin() as connection:
                    return work(connection)
            except sa.exc.IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _tokens(self, connection: sa.Connection, person_id: str, now: datetime) -> tuple[int, int]:
        today, month = day_of(now), now.strftime("%Y-%m-")
        rows = connection.execute(
            sa.select(usage.c.day, sa.func.sum(usage.c.tokens).label("tokens"))
            .where(usage.c.person_id == person_id, usage.c.day.startswith(month, autoescape=True))
            .group_by(usage.c.day)
        ).all()
        return sum(row.tokens for row in rows if row.day == today), sum(row.tokens for row in rows)

    def tokens(self, person_id: str) -> tuple[int, int]:
        """Return the tokens a person has spent today and this month (UTC), on every model."""
        with self.engine.connect() as connection:
            return self._tokens(connection, person_id, self._clock())

    def report(self, person_id: str | None = None) -> list[Spent]:
        """Return what each person (or one) spent this month, per model, with today's part; by person, then model."""
        now = self._clock()
        today, month = day_of(now), now.strftime("%Y-%m-")
        query = sa.select(usage).where(usage.c.day.startswith(month, autoescape=True))
        if person_id is not None:
            query = query.where(usage.c.person_id == person_id)
        totals: dict[tuple[str, str], list[int]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                spent = totals.setdefault((row.person_id, row.model), [0, 0, 0, 0])
                if row.day == today:
                    spent[0] += row.requests
                    spent[1] += row.tokens
                spent[2] += row.requests
                spent[3] += row.tokens
        return [Spent(person, model, *spent) for (person, model), spent in sorted(totals.items())]
