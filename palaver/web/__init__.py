"""The web layer: the page, the JSON, OpenAI and MLflow APIs. Never imports torch."""
