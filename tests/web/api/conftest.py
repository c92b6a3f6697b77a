"""The conversation API's fixtures."""

import pytest


@pytest.fixture
def browser(client):
    """A browser that has opened the page, so it owns what it starts through the API too."""
    client.get("/")
    client.post("/", data={"textbox": "first"})
    return client
