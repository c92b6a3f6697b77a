"""OpenAI's Responses API under /v1/responses: replies that Palaver stores, so a later one continues them by id."""
