"""Gunicorn settings for Palaver: worker processes each holding the model, threads for concurrent requests.

The top-level gunicorn.conf.py (the Procfile's) imports these; an installed `palaver serve` names this module.
"""

import ctypes
import gc
import logging
import os

import palaver.web.http_worker as http_worker
from palaver.core.config import Settings

settings = Settings.from_env()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Each worker loads its own model, so this is PALAVER_WORKERS (1 by default), never the platform's
# WEB_CONCURRENCY, which is sized for apps without one. Conversations are shared through the database.
workers = settings.workers
# gthread, except that the poller reads each request whole before a thread takes it, so slow or silent
# clients hold no thread (docs/slow-clients.md). The worker class is loaded in this process before the fork.
worker_class = "palaver.web.http_worker.BufferedThreadWorker"
# Bodies the app would refuse with 413 are handed over at once instead of being waited for.
http_worker.BufferedThreadWorker.max_body_bytes = settings.max_body_bytes
# A request must arrive whole within PALAVER_READ_TIMEOUT seconds of its first byte, or it gets 408.
http_worker.BufferedThreadWorker.request_deadline = settings.read_timeout
# Behind a proxy every connection comes from the proxy's address, so a per-address cap would cap everyone.
http_worker.BufferedThreadWorker.max_connections_per_address = (
    0 if settings.trusted_proxies else settings.max_connections_per_address
)
threads = settings.http_threads
# gthread's heartbeat comes from the main thread, so a long generation never trips this;
# it covers a worker that hangs outright. The model loads on the engine's own thread.
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"


def on_starting(server):
    """Pull the Hub models the settings name, once, before the workers start; a model that cannot be had stops it.

    Each worker would pull them itself while booting, one at a time under the file's lock, and a download longer
    than the boot timeout would have its worker killed; here the workers find them pulled.
    """
    if settings.backend != "local":
        return
    from palaver.backends.model_list import configured_models
    from palaver.core.errors import ConfigurationError
    from palaver.core.hub_sources import is_hub_source
    from palaver.models.pulling import pull_configured

    try:
        sources = [entry.source for entry in configured_models(settings) if is_hub_source(entry.source)]
        if sources and not logging.getLogger().handlers:  # the pull's progress goes to the log, as the workers' do
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        pull_configured(sources, settings.cache_dir, terminal=True)
    except ConfigurationError as exc:
        raise SystemExit(f"palaver: {exc}") from None


def post_fork(server, worker):
    """Tune glibc's malloc in the worker, where the model and its caches live.

    - Cap the arenas: by default each request thread may get its own (up to 8 per core), each keeping the memory
      it freed, so the worker grows with the thread count.
    - Fix the mmap threshold at 128 KB: glibc otherwise raises it each time a large block is freed, after which
      KV caches and logits come from the heap and fragment it (a ten-minute soak grew 41%; with this, it shrank).
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def post_worker_init(worker):
    """Freeze what the worker has built so far (its modules and the app) out of the garbage collector's sight."""
    # None of it is ever garbage, yet every full collection walked it, and so did those at exit: 0.3 s of CPU.
    gc.freeze()
