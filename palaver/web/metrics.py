"""Prometheus metrics for the engine and the web surfaces, in one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from palaver.core.types import Reply
from palaver.engine.scheduling.generation import Observer

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Count requests, and each model's tokens and timings; each model's engine reports to its observer."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "palaver_requests", "HTTP requests by surface and status.", ["surface", "status"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "palaver_queue_depth", "Requests waiting for or using the model.", ["model"], registry=self.registry
        )
        self.batch_size = Histogram(
            "palaver_batch_size",
            "Requests generated together in one engine step.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "palaver_time_to_first_token_seconds",
            "Seconds from queueing a request to its first text.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "palaver_generated_tokens", "Completion tokens generated.", ["model"], registry=self.registry
        )
        self.model_load = Gauge(
            "palaver_model_load_seconds", "Seconds the model took to load.", ["model"], registry=self.registry
        )
        self.model_loaded = Gauge(
            "palaver_model_loaded", "1 while the model is loaded and ready, else 0.", ["model"], registry=self.registry
        )
        self.model_loads = Gauge(
            "palaver_model_loads",
            "Times the model was loaded (again after an unload).",
            ["model"],
            registry=self.registry,
        )

    def observer(self, model: str) -> Observer:
        """Return the observer one model's engine reports to."""
        return ModelObserver(self, model)

    def watch(self, router) -> None:
        """Read each model's queue depth, load time and state from the router when scraped."""
        for name in router.names:
            self.queue_depth.labels(name).set_function(lambda name=name: router.describe_model(name)["pending"])
            self.model_load.labels(name).set_function(lambda name=name: router.load_seconds_of(name))
            self.model_loaded.labels(name).set_function(
                lambda name=name: float(router.describe_model(name)["state"] == "ready")
            )
            self.model_loads.labels(name).set_function(lambda name=name: router.describe_model(name)["loads"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelObserver(Observer):
    """One model's engine reporting into the app's metrics, under its name."""

    def __init__(self, metrics: Metrics, model: str):
        self.metrics, self.model = metrics, model

    def first_text(self, seconds: float) -> None:
        self.metrics.time_to_first_token.labels(self.model).observe(seconds)

    def step(self, batch_size: int) -> None:
        self.metrics.batch_size.labels(self.model).observe(batch_size)

    def finished(self, reply: Reply) -> None:
        self.metrics.generated_tokens.labels(self.model).inc(reply.usage.completion_tokens)
