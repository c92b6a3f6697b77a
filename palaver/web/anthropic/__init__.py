"""Anthropic's Messages API under /v1/messages, so Anthropic's clients work against Palaver unchanged."""
