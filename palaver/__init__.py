"""Palaver: a self-hosted chatbot server."""
