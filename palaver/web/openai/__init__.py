"""The OpenAI-compatible API: its protocol objects and its routes."""
