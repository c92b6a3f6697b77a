"""Prometheus metrics for the engine and the web surfaces, in one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from palaver.core.types import Reply
from palaver.engine.generation import Observer

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics(Observer):
    """Count requests, tokens and timings; the engine reports to it as its observer."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "palaver_requests", "HTTP requests by surface and status.", ["surface", "status"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "palaver_queue_depth", "Requests waiting for or using the model.", registry=self.registry
        )
        self.batch_size = Histogram(
            "palaver_batch_size",
            "Requests generated together in one engine step.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "palaver_time_to_first_token_seconds",
            "Seconds from queueing a request to its first text.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "palaver_generated_tokens", "Completion tokens generated.", registry=self.registry
        )
        self.model_load = Gauge("palaver_model_load_seconds", "Seconds the model took to load.", registry=self.registry)

    def watch(self, engine) -> None:
        """Read the queue depth and load time from the engine when scraped."""
        self.queue_depth.set_function(lambda: engine.pending)
        self.model_load.set_function(lambda: engine.load_seconds)

    def first_text(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)

    def step(self, batch_size: int) -> None:
        self.batch_size.observe(batch_size)

    def finished(self, reply: Reply) -> None:
        self.generated_tokens.inc(reply.usage.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
