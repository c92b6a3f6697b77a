"""The backend protocol: the engine here and the upstream engine both provide it, so nothing branches on which."""

from typing import get_type_hints

from palaver.backends import Backend, create_backend
from palaver.backends.upstream import UpstreamEngine
from palaver.core.config import Settings
from palaver.core.requests import GenerationRequest
from palaver.engine.engine import Engine

MEMBERS = [name for name in vars(Backend) if not name.startswith("_")]


def test_both_backends_and_the_router_over_them_provide_every_member_of_the_protocol(tmp_path):
    router = create_backend(Settings(cache_dir=str(tmp_path)))
    through = create_backend(Settings(backend="openai", upstream_url="http://127.0.0.1:9/v1", cache_dir=str(tmp_path)))
    with router.using(None) as local, through.using(None) as upstream:  # a lease starts the load
        pass
    assert isinstance(local, Engine) and isinstance(upstream, UpstreamEngine)
    assert {"stream", "describe", "model_limits", "close"} <= set(MEMBERS) and "waiting" not in MEMBERS, (
        "the router admits"
    )
    for backend in (local, upstream, router):
        missing = [name for name in MEMBERS if not hasattr(type(backend), name)]
        assert missing == [], f"{type(backend).__name__} lacks {missing}"
        assert backend.state in ("idle", "loading", "ready", "failed") and backend.pending == 0
        assert backend.describe()["state"]
        backend.close()
    assert get_type_hints(Backend.stream)["request"] is GenerationRequest, "typed, for mypy to check both"
