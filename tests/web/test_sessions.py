"""The session cookie's key: generated once, kept in the cache, the same for workers that start together."""

import threading

from palaver.core.config import Settings
from palaver.web.sessions import secret_key


def test_the_generated_key_is_kept_and_shared_by_workers_starting_together(tmp_path):
    settings = Settings(cache_dir=str(tmp_path))
    keys: list[str] = []
    workers = [threading.Thread(target=lambda: keys.append(secret_key(settings))) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert secret_key(settings) == keys[0], "a restart reads the same key"
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert secret_key(Settings(cache_dir=str(tmp_path), secret_key="s3cret")) == "s3cret"
