"""Quotas at the door, with accounts: the models a person may use, their requests a minute, their tokens a day and a
month; what they spend recorded when each reply settles."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import limits
from limits.strategies import RateLimiter

from palaver.core.errors import Forbidden, RateLimited
from palaver.core.types import Caller
from palaver.storage.quotas import Quota, QuotaStore
from palaver.storage.records import utc_now

log = logging.getLogger("palaver")


def next_day(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


def daily_refusal(limit: int, now: datetime) -> RateLimited:
    return RateLimited(
        f"your daily token quota of {limit:,} is used up; it resets at 00:00 UTC",
        retry_after=seconds_until(next_day(now), now),
        code="quota_exceeded",
    )


def monthly_refusal(limit: int, now: datetime) -> RateLimited:
    resets = next_month(now)
    return RateLimited(
        f"your monthly token quota of {limit:,} is used up; it resets on {resets.day} {resets:%B} at 00:00 UTC",
        retry_after=seconds_until(resets, now),
        code="quota_exceeded",
    )


def model_refusal(model: str, quota: Quota) -> Forbidden:
    allowed = ", ".join(f"'{name}'" for name in quota.models or ()) or "none"
    return Forbidden(
        f"your quota does not allow the model '{model}'; the models it allows: {allowed}",
        param="model",
        code="model_not_allowed",
    )


class PersonQuotas:
    """Hold people to the quotas an admin set, and record what they spend, per UTC day and model."""

    def __init__(self, store: QuotaStore, strategy: RateLimiter, clock: Callable[[], datetime] = utc_now):
        self.store = store
        self.strategy = strategy  # the rate limits' counters: shared by every worker where those are
        self._clock = clock
        self._settler = ThreadPoolExecutor(1, thread_name_prefix="palaver-usage")

    def admit(self, caller: Caller, person_id: str) -> Caller:
        """Count a generating request against the person's quotas, or refuse; return the caller that spends them."""
        quota = self.store.effective(person_id)
        self.count_request(person_id, quota)
        self.check_tokens(person_id, quota)
        return replace(caller, on_model=lambda model: self.on_model(caller, person_id, quota, model))

    def count_request(self, person_id: str, quota: Quota) -> None:
        if quota.requests_per_minute is None:
            return
        per_minute = limits.RateLimitItemPerMinute(quota.requests_per_minute)
        if not self.strategy.hit(per_minute, "person-requests", person_id):
            reset_at = self.strategy.get_window_stats(per_minute, "person-requests", person_id).reset_time
            wait = max(1, int(reset_at - time.time() + 0.999))
            raise RateLimited(
                f"your quota of {quota.requests_per_minute:,} requests a minute is used up; retry in {wait} seconds",
                retry_after=wait,
                code="quota_exceeded",
            )

    def check_tokens(self, person_id: str, quota: Quota) -> None:
        """Refuse at once while a token quota is spent: what is used and what replies under way have reserved."""
        if quota.tokens_per_day is None and quota.tokens_per_month is None:
            return
        self.over(quota, 0, *self.store.usage.tokens(person_id))

    def over(self, quota: Quota, most: int, today: int, this_month: int) -> int:
        """Return how much of a reservation of most tokens (in the totals) passes a quota; refuse if all of it does."""
        now, passing = self._clock(), 0
        for limit, total, refusal in (
            (quota.tokens_per_day, today, daily_refusal),
            (quota.tokens_per_month, this_month, monthly_refusal),
        ):
            if limit is None:
                continue
            if total - most >= limit:
                raise refusal(limit, now)
            passing = max(passing, total - limit)
        return passing  # below most: at least one token of the reservation fits

    def on_model(self, caller: Caller, person_id: str, quota: Quota, model: str) -> Caller:
        """Refuse a model the quota does not allow; else return the caller whose reservations are recorded on it."""
        if not quota.allows(model):
            raise model_refusal(model, quota)
        return Caller(caller.client, self.reservation(caller, person_id, quota, model))

    def reservation(self, caller: Caller, person_id: str, quota: Quota, model: str):
        """Return how a generation on model reserves tokens: of the caller's rate limit, and of the person's quotas."""

        def reserve(most: int) -> Callable[[int], None]:
            settle_rate = caller.reserve(most) if caller.reserve is not None else None
            try:
                settle_quota = self.reserve(person_id, quota, model, most)
            except BaseException:
                if settle_rate is not None:
                    settle_rate(0)
                raise

            def settle(used: int) -> None:
                if settle_rate is not None:
                    settle_rate(used)
                settle_quota(used)

            return settle

        return reserve

    def reserve(self, person_id: str, quota: Quota, model: str, most: int) -> Callable[[int], None]:
        """Record a request and reserve its tokens (as many as the quotas leave), or refuse; return the settlement."""
        limited = quota.tokens_per_day is not None or quota.tokens_per_month is not None
        tokens = max(1, most) if limited else 0
        day, kept = self.store.usage.take(person_id, model, tokens, lambda *totals: self.over(quota, tokens, *totals))

        def settle(used: int) -> None:
            # Off the engine thread that finishes the row: the database is a network call away.
            self._settler.submit(self._settle, person_id, model, used - kept, day)

        return settle

    def _settle(self, person_id: str, model: str, difference: int, day: str) -> None:
        try:
            if difference:
                self.store.usage.add(person_id, model, tokens=difference, day=day)
        except Exception:  # a database that is down must not take the settler with it
            log.exception("recording a person's usage failed")
