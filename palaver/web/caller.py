"""The caller of a request: which client it counts against, the share it holds, and the budgets it spends."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import Response, g, request

from palaver.core.errors import InvalidRequest
from palaver.core.types import ANONYMOUS, CALLER, Caller
from palaver.web.security import GENERATING_ENDPOINTS, PROBE_ENDPOINTS, caller_id, request_person
from palaver.web.services import services


def identify_caller() -> None:
    """Name the request's client, for its budgets and the engine's round-robin; hold a place in its share."""
    g.caller = caller_id()
    # Generation requests made while this request runs take it; teardown puts the thread back to nobody.
    CALLER.set(Caller(g.caller, token_reservation(g.caller)))
    if request.endpoint not in PROBE_ENDPOINTS:
        g.give_back_share = services().shares.take(g.caller)


def hold_rows(rows: int, param: str) -> None:
    """Count a request's rows (its choices, or its prompts) against its client's share and the server's bound.

    The request already holds one place; a request that alone needs more than either bound gets a 400 naming param.
    """
    app = services()
    for bound, name in ((app.settings.max_pending, "PALAVER_MAX_PENDING"), (app.shares.share, "PALAVER_CLIENT_SHARE")):
        if bound and rows > bound:  # never servable, so not a 429 to retry
            raise InvalidRequest(
                f"'{param}' asks for {rows} generations at once; one request may ask for at most {bound} ({name})",
                param=param,
            )
    extra = app.shares.take(g.caller, rows - 1)
    held = g.pop("give_back_share", None)

    def give_back() -> None:
        extra()
        if held is not None:
            held()

    g.give_back_share = give_back


def hold_share_until_sent(response: Response) -> Response:
    """Give the client's place back once the answer is sent: for a stream, when its last event has gone."""
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        response.call_on_close(give_back)
    return response


def give_back_share(_error: BaseException | None = None) -> None:
    """Give the place back if no answer took it over (Flask tears a streamed request down before it is sent)."""
    CALLER.set(ANONYMOUS)
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        give_back()


def apply_rate_limits() -> None:
    """Count the request against its caller's budgets; a generation's tokens are reserved when it is admitted."""
    if request.endpoint in PROBE_ENDPOINTS:
        return
    services().limits.count_request(g.caller)
    if request.endpoint in GENERATING_ENDPOINTS:
        services().limits.check_tokens(g.caller)
        hold_to_quotas()


def hold_to_quotas() -> None:
    """With accounts, hold a person's generation to their quotas; what its replies spend is recorded as they settle."""
    person = request_person()  # None without accounts: nothing changes there
    if person is not None and person.active:
        CALLER.set(services().quotas.admit(CALLER.get(), person.id))


def token_reservation(caller: str) -> Callable[[int], Callable[[int], None]] | None:
    """Return how the caller's generations reserve tokens, or None without a token limit."""
    rate_limits = services().limits
    return partial(rate_limits.reserve_tokens, caller) if rate_limits.tokens is not None else None
