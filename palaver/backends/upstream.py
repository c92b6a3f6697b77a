"""The upstream backend: generation sent to an OpenAI-compatible server, behind the engine's own interface."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from palaver.backends.openai_wire import (
    RETRY_AFTER_SECONDS,
    pieces,
    sampling_fields,
    thinking_fields,
    tool_fields,
    translate,
)
from palaver.core.config import Settings
from palaver.core.embeddings import EmbeddingRequest, Embeddings
from palaver.core.errors import InvalidRequest, ModelNotReady, PalaverError
from palaver.core.history import kept_history
from palaver.core.requests import GenerationRequest
from palaver.core.types import (
    Message,
    ModelLimits,
    PromptInfo,
    ReasoningDelta,
    Reply,
    ReplyEvents,
    TokenLogprob,
    ToolCall,
    Usage,
    final,
)
from palaver.engine.scheduling.generation import FINISHED, Job, Observer, serve
from palaver.engine.scheduling.in_flight import InFlight

log = logging.getLogger("palaver.backends.upstream")

CONNECT_SECONDS = 5.0
LOOKUP_COOL_DOWN_SECONDS = 2.0
CONNECT_RETRIES = 2  # connection attempts are retried; a request the upstream received never is
# The upstream tokenizes with its own model; OpenAI's API has no way to ask it, so these are refused, not guessed.
ENDINGS = ("length", "tool_calls")  # the finish reasons kept as the upstream gives them; any other is a stop
TOKENS_UNAVAILABLE = "/tokenize and /detokenize are not available with PALAVER_BACKEND=openai"


def without_credentials(url: str) -> str:
    """Return a URL fit for logs and /readyz: no user, no password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class UpstreamEngine:
    """Serve generations from an OpenAI-compatible server: the same stream of events and bounds."""

    def __init__(self, settings: Settings, observer: Observer | None = None):
        self.settings = settings
        self.observer = observer or Observer()
        self.counts: Counter[str] = Counter()
        self.in_flight = InFlight(self.counts)  # counted, not bounded: the router admits
        self.url = without_credentials(settings.upstream_url)
        import openai  # imported once an upstream is configured: a server without one never pays for it

        self.client = openai.OpenAI(
            base_url=settings.upstream_url,
            api_key=settings.upstream_api_key or "none",
            max_retries=0,  # the transport retries connecting; nothing retries a request the upstream received
            http_client=httpx2.Client(
                transport=httpx2.HTTPTransport(
                    retries=CONNECT_RETRIES,
                    limits=httpx2.Limits(max_connections=settings.max_pending, max_keepalive_connections=32),
                ),
                timeout=httpx2.Timeout(settings.request_timeout, connect=CONNECT_SECONDS),
            ),
        )
        self.limits: ModelLimits | None = None
        self.served_id: str | None = None
        self.load_error: str | None = None
        self._lock = threading.Lock()
        self._failure: PalaverError | None = None
        self._failed_at = 0.0
        self._lookup: threading.Thread | None = None

    @property
    def state(self) -> str:
        return "ready" if self.limits is not None else ("failed" if self.load_error else "idle")

    @property
    def model_name(self) -> str:
        """Return the name clients use: PALAVER_UPSTREAM_MODEL, or the model the upstream lists first."""
        if self.settings.upstream_model:
            return self.settings.upstream_model
        self.model_limits(self.settings.load_wait)
        return self.served_id or ""

    @property
    def pending(self) -> int:
        return self.in_flight.pending

    @property
    def load_seconds(self) -> float:
        return 0.0

    def start(self) -> None:
        """Look the upstream model up in the background, unless a look-up is running."""
        if self._lookup is None or not self._lookup.is_alive():
            self._lookup = threading.Thread(target=self.wait_ready, args=(self.settings.load_wait,), daemon=True)
            self._lookup.start()

    def wait_ready(self, timeout: float) -> bool:
        try:
            self.model_limits(timeout)
        except PalaverError:
            return False
        return True

    def model_limits(self, timeout: float) -> ModelLimits:
        """Return the upstream model's limits, asking the upstream's /models once it answers; 503 until then."""
        with self._lock:
            if self.limits is None:
                if self._failure is not None and time.monotonic() - self._failed_at < LOOKUP_COOL_DOWN_SECONDS:
                    raise self._failure  # answer at once rather than queue every request behind a dead upstream
                try:
                    self.limits = self._discover()
                except PalaverError as exc:
                    self._failure, self._failed_at = exc, time.monotonic()
                    raise
            return self.limits

    def _discover(self) -> ModelLimits:
        try:
            listed = self.client.models.list().data
        except Exception as exc:
            error = translate(exc)
            self.load_error = error.message
            raise error from None
        wanted = self.settings.upstream_model
        card = next((model for model in listed if model.id == wanted), None) if wanted else next(iter(listed), None)
        if card is None:
            self.load_error = f"the upstream does not serve '{wanted}'"
            log.error("%s at %s; it lists %s", self.load_error, self.url, [model.id for model in listed])
            raise ModelNotReady(f"the upstream model server does not serve '{wanted}'", retry_after=RETRY_AFTER_SECONDS)
        self.served_id, self.load_error = card.id, None
        extra: dict[str, Any] = card.model_extra or {}
        context = extra.get("context_length") or extra.get("max_model_len")  # Palaver and vLLM name it so
        log.info("serving %s from %s", card.id, self.url)
        return ModelLimits(
            extra.get("family") or "upstream",
            float(card.created or time.time()),
            context,
            extra.get("max_input_tokens"),
            extra.get("max_output_tokens"),
        )

    def describe(self) -> dict[str, Any]:
        """Describe the upstream model and this backend's state for /readyz and the page."""
        if self.limits is None and self.settings.preload:
            self.start()  # an upstream that was down at start-up is asked again, so readiness can recover
        info: dict[str, Any] = {
            "state": self.state,
            "pending": self.pending,
            "requests": dict(self.counts),
            "backend": "openai",  # the upstream's address stays in the log: /readyz is public
        }
        if self.limits is not None:
            info.update(
                name=self.served_id,
                family=self.limits.family,
                context_tokens=self.limits.context_tokens,
                max_input_tokens=self.limits.max_input_tokens,
                max_reply_tokens=self.limits.max_reply_tokens,
            )
        return info

    def tokenize(self, request: GenerationRequest) -> list[int]:
        raise InvalidRequest(TOKENS_UNAVAILABLE, code="unsupported_parameter")

    def detokenize(self, token_ids: list[int]) -> str:
        raise InvalidRequest(TOKENS_UNAVAILABLE, code="unsupported_parameter")

    def generate(self, request: GenerationRequest) -> Reply:
        return final(self.stream(request), Reply)

    def stream(self, request: GenerationRequest) -> ReplyEvents:
        """Open the upstream's stream, then yield a PromptInfo, the text as it comes, and the Reply."""
        job = Job(request)
        opened: list[Any] = []  # the upstream's stream, once open

        def start() -> PromptInfo:
            limits = self.model_limits(self.settings.load_wait)
            params = request.params
            job.reserve_tokens(min(params.max_new_tokens, limits.max_reply_tokens or params.max_new_tokens))
            messages, dropped = sent_history(request)
            chunks = self._open(request, messages, limits.max_reply_tokens)  # errors before any text keep their status
            opened.append(chunks)
            job.queued_at = time.monotonic()
            self.in_flight.started()  # the reader counts it out, however it ends
            if not request.cancelled.is_set() and job.result.set_running_or_notify_cancel():
                reading = threading.Thread(target=self._read, args=(job, chunks, dropped), name="palaver-upstream")
                reading.daemon = True
                reading.start()
            else:  # stopped while the stream was opening: nothing to read
                chunks.close()
                self.in_flight.finished()
                job.deltas.put(FINISHED)
            return PromptInfo(0, dropped)  # the upstream counts the prompt; its size arrives with the usage

        def close() -> None:
            for chunks in opened:
                chunks.close()  # the upstream sees the connection close and stops generating

        return serve(job, start, self.settings.request_timeout, close)

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Ask the upstream's /v1/embeddings for the inputs' vectors; its own limits (and truncation) apply."""
        self.model_limits(self.settings.load_wait)
        reserve = request.caller.reserve
        settle = reserve(1) if reserve is not None else None  # refused while the budget is spent; charged after
        sent: dict[str, Any] = {"model": self.served_id, "input": request.inputs, "encoding_format": "float"}
        if request.dimensions is not None:  # the upstream's model may shorten its vectors, or refuse
            sent["dimensions"] = request.dimensions
        self.in_flight.started()
        answer = None
        try:
            answer = self.client.embeddings.create(**sent)
        except Exception as exc:
            raise translate(exc) from None
        finally:
            self.in_flight.finished()
            if settle is not None:
                settle(answer.usage.prompt_tokens if answer is not None and answer.usage else 0)
        vectors = [list(item.embedding) for item in sorted(answer.data, key=lambda item: item.index)]
        return Embeddings(vectors, answer.usage.prompt_tokens if answer.usage else 0)

    def _open(self, request: GenerationRequest, messages: list[Message] | None, max_reply_tokens: int | None) -> Any:
        params = request.params
        sampling = sampling_fields(params, self.served_id, max_reply_tokens)
        try:
            if messages is not None:
                sent: Any = [message.as_dict() for message in messages]
                if params.logprobs is not None:
                    sampling.update(logprobs=True, top_logprobs=params.logprobs)
                extra = {**tool_fields(request), **thinking_fields(params)}
                return self.client.chat.completions.create(messages=sent, **sampling, **extra)
            assert request.prompt is not None  # a request carries messages or a prompt
            if params.logprobs is not None:
                sampling["logprobs"] = params.logprobs
            return self.client.completions.create(prompt=request.prompt, **sampling)
        except Exception as exc:
            raise translate(exc) from None

    def _read(self, job: Job, chunks: Any, dropped: int) -> None:
        """Hand the upstream's reasoning and text to the job as they come, then its Reply; runs on its own thread."""
        text, reasoning, text_pieces, usage, finish_reason = "", "", 0, None, "stop"
        calls: dict[int, list[str]] = {}  # each call's id, name and arguments as they arrive
        logprobs: list[TokenLogprob] = []
        first = True
        try:
            with chunks:
                for piece in pieces(chunks):
                    if job.cancelled.is_set():
                        finish_reason = "cancelled"
                        break
                    usage = piece.usage or usage
                    if piece.finish_reason:
                        finish_reason = piece.finish_reason if piece.finish_reason in ENDINGS else "stop"
                    for entry in piece.logprobs:
                        logprobs.append(entry)
                        job.deltas.put(entry)
                    for call in piece.calls:
                        known = calls.setdefault(call.index, ["", "", ""])
                        known[0], known[1] = known[0] or call.id or "", known[1] or call.name or ""
                        known[2] += call.arguments
                        job.deltas.put(call)
                    if (piece.text or piece.reasoning) and first:
                        first = False
                        self.observer.first_text(time.monotonic() - job.queued_at)
                    if piece.reasoning:
                        reasoning, text_pieces = reasoning + piece.reasoning, text_pieces + 1
                        job.deltas.put(ReasoningDelta(piece.reasoning))
                    if piece.text:
                        text, text_pieces = text + piece.text, text_pieces + 1
                        job.deltas.put(piece.text)
            if job.cancelled.is_set():
                finish_reason = "cancelled"
            reply = Reply(
                text,
                usage or Usage(0, text_pieces),
                dropped,
                finish_reason,
                tool_calls=tuple(ToolCall(*calls[index]) for index in sorted(calls)),
                logprobs=tuple(logprobs) if job.params.logprobs is not None else None,
                reasoning=reasoning,
            )
            self.counts[reply.finish_reason] += 1
            self.counts["generated_tokens"] += reply.usage.completion_tokens
            self.observer.finished(reply)
            job.result.set_result(reply)
        except Exception as exc:
            if job.cancelled.is_set():  # closed by Stop or a departed client: what was sent is the reply
                job.result.set_result(Reply(text, Usage(0, text_pieces), dropped, "cancelled", reasoning=reasoning))
            else:
                job.result.set_exception(translate(exc))
        finally:
            self.in_flight.finished()
            job.deltas.put(FINISHED)

    def close(self) -> None:
        self.client.close()


def sent_history(request: GenerationRequest) -> tuple[list[Message] | None, int]:
    """Return the messages to send the upstream, at most max_history turns of them, and how many were left out."""
    if request.messages is None or request.max_history is None:
        return request.messages, 0
    return kept_history(request.messages, request.max_history)
