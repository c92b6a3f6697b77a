"""Quotas set by an admin for a person or a group, the limit in force for each person, their groups and usage."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa

from palaver.core.errors import InvalidRequest
from palaver.storage.groups import Groups
from palaver.storage.records import utc_now
from palaver.storage.schema import group_members, quotas
from palaver.storage.usage import Usage

LIMITS = ("tokens_per_day", "tokens_per_month", "requests_per_minute")
MAX_LIMIT = 2**31 - 1  # the columns are 32-bit integers


@dataclass(frozen=True)
class Quota:
    """Limits of each kind (None: no limit of that kind) and the models allowed (None: every model)."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_minute: int | None = None
    models: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, field.name) is None for field in fields(self))

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    @classmethod
    def of(cls, row: sa.Row) -> Quota:
        models = tuple(name for name in row.models.split(",") if name) if row.models is not None else None
        return cls(row.tokens_per_day, row.tokens_per_month, row.requests_per_minute, models)


def strictest(own: Quota | None, groups: Iterable[Quota]) -> Quota:
    """Return the limits in force: of each kind, the person's own if set, else the smallest of their groups'."""
    groups = list(groups)
    chosen: dict[str, object] = {}
    for kind in LIMITS:
        mine = getattr(own, kind) if own is not None else None
        theirs = [value for group in groups if (value := getattr(group, kind)) is not None]
        chosen[kind] = mine if mine is not None else min(theirs, default=None)
    if own is not None and own.models is not None:
        chosen["models"] = own.models
    else:  # a model is allowed by the groups together only if each group that names models names it
        lists = [set(group.models) for group in groups if group.models is not None]
        chosen["models"] = tuple(sorted(set.intersection(*lists))) if lists else None
    return Quota(**chosen)  # type: ignore[arg-type]


def checked_quota(quota: Quota) -> Quota:
    """Return quota if each limit is a whole number from 0 to the columns' bound, or refuse naming the first not."""
    for kind in LIMITS:
        value = getattr(quota, kind)
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise InvalidRequest(f"'{kind}' must be from 0 to {MAX_LIMIT}, or empty for no limit", param=kind)
    return quota


class QuotaStore:
    """Keep quotas per person and per group, the groups (.groups) and what people spend (.usage)."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self.groups = Groups(engine, clock)
        self.usage = Usage(engine, clock)

    def set(self, subject: str, quota: Quota) -> None:
        """Set the quota of a subject ("person:<id>" or "group:<id>"); an empty one clears it."""
        checked_quota(quota)
        if quota.empty:
            self.clear(subject)
            return
        values = {kind: getattr(quota, kind) for kind in LIMITS}
        values["models"] = ",".join(quota.models) if quota.models is not None else None
        with self.engine.begin() as connection:  # replaced whole, so delete-then-insert is the portable upsert
            connection.execute(quotas.delete().where(quotas.c.subject == subject))
            connection.execute(quotas.insert().values(subject=subject, **values))

    def clear(self, subject: str) -> bool:
        with self.engine.begin() as connection:
            return connection.execute(quotas.delete().where(quotas.c.subject == subject)).rowcount > 0

    def of(self, subject: str) -> Quota | None:
        """Return the quota set for a subject itself, if any."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(quotas).where(quotas.c.subject == subject)).first()
        return Quota.of(row) if row else None

    def everything(self) -> dict[str, Quota]:
        """Return every quota set, by subject."""
        with self.engine.connect() as connection:
            return {row.subject: Quota.of(row) for row in connection.execute(sa.select(quotas))}

    def effective(self, person_id: str) -> Quota:
        """Return the limits in force for a person: their own, else the strictest of their groups', else none."""
        group_subjects = sa.select(sa.literal("group:") + group_members.c.group_id).where(
            group_members.c.person_id == person_id
        )
        query = sa.select(quotas).where(
            sa.or_(quotas.c.subject == f"person:{person_id}", quotas.c.subject.in_(group_subjects))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        own = next((Quota.of(row) for row in rows if row.subject == f"person:{person_id}"), None)
        return strictest(own, (Quota.of(row) for row in rows if row.subject != f"person:{person_id}"))
