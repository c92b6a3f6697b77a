"""Ollama's API under /ollama, so Ollama's clients (its Python and JS libraries, Open WebUI, Home Assistant) work."""
