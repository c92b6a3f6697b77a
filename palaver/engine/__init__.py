"""The engine: loading models, batching requests and generating replies. Never imports Flask."""
