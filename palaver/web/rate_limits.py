"""Rate limits: requests and tokens (generated or embedded) per caller, and failed page sign-ins per address."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import limits
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError, RateLimited

log = logging.getLogger("palaver")


class RateLimits:
    """Count requests and tokens generated or embedded per caller in fixed one-window buckets, shared by all threads."""

    def __init__(self, settings: Settings):
        try:
            self.strategy = FixedWindowRateLimiter(storage_from_string(settings.rate_limit_storage))
            self.requests = limits.parse(settings.rate_limit) if settings.rate_limit else None
            self.tokens = limits.parse(settings.token_rate_limit) if settings.token_rate_limit else None
            self.sign_ins = limits.parse(settings.sign_in_attempts)
        except (ValueError, limits.errors.ConfigurationError) as exc:
            raise ConfigurationError(f"rate limits: {exc}") from None
        self._settler = ThreadPoolExecutor(1, thread_name_prefix="palaver-budget")

    def count_request(self, caller: str) -> None:
        """Count one request, or refuse it once the caller's budget is spent."""
        if self.requests is not None and not self.strategy.hit(self.requests, "requests", caller):
            raise self._refusal(self.requests, "requests", caller, "requests")

    def check_tokens(self, caller: str) -> None:
        """Refuse a generation at once while the caller's token budget for this window is spent."""
        if self.tokens is not None and not self.strategy.test(self.tokens, "tokens", caller):
            raise self._refusal(self.tokens, "tokens", caller, "tokens generated or embedded")

    def reserve_tokens(self, caller: str, most: int) -> Callable[[int], None]:
        """Take up to most tokens of the caller's budget now, or refuse; return the call that settles the real count.

        Reserving at admission is what makes the budget hold when many requests arrive at once: each one's
        reservation is counted before the next is checked, not charged after all of them have run.
        """
        limit = self.tokens
        if limit is None:
            return lambda used: None
        reserved = max(1, min(most, limit.amount))
        key, storage = limit.key_for("tokens", caller), self.strategy.storage
        if storage.incr(key, limit.get_expiry(), amount=reserved) > limit.amount:
            storage.incr(key, limit.get_expiry(), amount=-reserved)
            raise self._refusal(
                limit, "tokens", caller, f"tokens generated or embedded (this request reserves {reserved})"
            )
        window = storage.get_expiry(key)

        def settle(used: int) -> None:
            # Off the engine thread that finishes the row: a shared counter store is a network call away.
            self._settler.submit(self._settle, key, reserved, used, window)

        return settle

    def _settle(self, key: str, reserved: int, used: int, window: float) -> None:
        """Charge a reply's overshoot in full; give back what it did not use, unless its window has passed."""
        assert self.tokens is not None  # only reservations settle
        storage, difference = self.strategy.storage, used - reserved
        try:
            if difference > 0 or (difference < 0 and storage.get_expiry(key) == window):
                storage.incr(key, self.tokens.get_expiry(), amount=difference)
        except Exception:  # a counter store that is down must not take the settler with it
            log.exception("settling a token reservation failed")

    def check_sign_in(self, address: str) -> None:
        """Refuse sign-in attempts from an address that has failed too often."""
        if not self.strategy.test(self.sign_ins, "sign-in", address):
            raise self._refusal(self.sign_ins, "sign-in", address, "failed sign-ins")

    def failed_sign_in(self, address: str) -> None:
        self.strategy.hit(self.sign_ins, "sign-in", address)

    def _refusal(self, limit, bucket: str, caller: str, what: str) -> RateLimited:
        reset_at = self.strategy.get_window_stats(limit, bucket, caller).reset_time
        wait = max(1, int(reset_at - time.time() + 0.999))
        return RateLimited(
            f"rate limit reached: at most {limit.amount} {what} per {limit.multiples} "
            f"{limit.GRANULARITY.name}; retry in {wait} seconds",
            retry_after=wait,
            code="rate_limit_exceeded",
        )
