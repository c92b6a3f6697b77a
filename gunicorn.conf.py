"""Gunicorn settings for Palaver: one worker process holding the model, threads for concurrent requests."""

import os

from commons import Settings

settings = Settings.from_env()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One process: the model and the conversation memory live in it, and a second worker would
# double the memory and split users' histories. Scale with threads here, or with more dynos.
workers = 1
worker_class = "gthread"
threads = settings.http_threads
# gthread's heartbeat comes from the main thread, so a long generation never trips this;
# it covers a worker that hangs outright. The model loads on the engine's own thread.
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
