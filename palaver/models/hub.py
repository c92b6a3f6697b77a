"""The Hugging Face Hub through huggingface_hub: a source's commit and files, and each file fetched into its cache.

huggingface_hub brings the cache, resumed downloads and the token (HF_TOKEN, or `hf auth login`). HF_ENDPOINT,
HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are read at each call, not once at import, so that a test or a command
may set them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models.choosing import Choice, HubFile, choose

log = logging.getLogger("palaver.models")
TRUE = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads its flags


class HubUnreachable(ConfigurationError):
    """The Hub cannot be asked now (no network, offline mode, a server error): a pulled model may still serve."""


class ChecksumMismatch(ConfigurationError):
    """A downloaded file's bytes are not those the Hub lists: the download is removed."""


def offline() -> bool:
    """Tell whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) keeps the Hub from being asked."""
    return any(os.environ.get(name, "").upper() in TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache() -> Path:
    """Return huggingface_hub's cache folder, as it finds it: HF_HUB_CACHE, else HF_HOME/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")).expanduser() / "hub"


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def snapshot_path(repo: str, commit: str, path: str) -> Path:
    """Return where huggingface_hub's cache keeps a file of a repository at a commit (a link to its blob)."""
    return hub_cache() / ("models--" + repo.replace("/", "--")) / "snapshots" / commit / path


@contextmanager
def asking(source: HubSource) -> Iterator[None]:
    """Translate huggingface_hub's errors into ConfigurationErrors that say what to do."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:
        raise ConfigurationError(
            f"{source}: {source.repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of yours"
        ) from None
    except errors.RepositoryNotFoundError:
        raise ConfigurationError(
            f"{source}: the Hub has no repository {source.repo} (or it is private: set HF_TOKEN)"
        ) from None
    except errors.RevisionNotFoundError:
        raise ConfigurationError(f"{source}: {source.repo} has no revision {source.revision}") from None
    except errors.RemoteEntryNotFoundError as exc:
        raise ConfigurationError(f"{source}: a file is missing from {source.repo}: {first_line(exc)}") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status < 500 and status != 429:
            raise ConfigurationError(f"{source}: the Hub refused: {first_line(exc)}") from None
        raise HubUnreachable(f"{source}: the Hub cannot be reached: {first_line(exc)}") from None
    except (httpx2.TransportError, errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError) as exc:
        raise HubUnreachable(f"{source}: the Hub cannot be reached: {first_line(exc)}") from None
    except OSError as exc:  # the disk: full, or not writable
        raise ConfigurationError(f"{source}: {exc}") from None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def commit_of(source: HubSource) -> str:
    """Ask the Hub which commit source's revision is now."""
    from huggingface_hub import HfApi

    if offline():
        raise HubUnreachable(f"{source}: HF_HUB_OFFLINE is set, so the Hub is not asked")
    with asking(source):
        commit = HfApi(endpoint=endpoint()).model_info(source.repo, revision=source.revision).sha
    if not commit:
        raise HubUnreachable(f"{source}: the Hub did not say which commit {source.revision} is")
    return commit


def choice_at(source: HubSource, commit: str) -> Choice:
    """List the repository's files at commit, with their sizes and hashes, and choose those source names."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    with asking(source):
        tree = HfApi(endpoint=endpoint()).list_repo_tree(source.repo, revision=commit, recursive=True)
        files = [
            HubFile(entry.path, entry.size, entry.lfs.sha256 if entry.lfs else "", entry.blob_id)
            for entry in tree
            if isinstance(entry, RepoFile)
        ]
    return choose(source, files)


def resolve(source: HubSource) -> tuple[str, Choice]:
    """Ask the Hub which commit source's revision is, and which of the repository's files it names there."""
    commit = commit_of(source)
    return commit, choice_at(source, commit)


def download(source: HubSource, commit: str, file: HubFile, bar_class: type | None) -> Path:
    """Fetch one file at commit into the cache, resuming a transfer cut short; return its path (check checks it)."""
    from huggingface_hub import hf_hub_download

    with asking(source):
        where = hf_hub_download(
            source.repo,
            file.path,
            revision=commit,
            cache_dir=hub_cache(),
            endpoint=endpoint(),
            tqdm_class=bar_class,
        )
    return Path(where)


def check(source: HubSource, path: Path, file: HubFile) -> None:
    """Hash a fetched file as the Hub lists it (SHA-256, or git's hash for a file kept in git); remove it if wrong."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 -- git's
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            (sha256 if file.sha256 else sha1).update(block)
    wanted, got = (file.sha256, sha256.hexdigest()) if file.sha256 else (file.git_sha1, sha1.hexdigest())
    if got == wanted:
        return
    remove_file(path)
    raise ChecksumMismatch(
        f"{source}: {file.path} downloaded with the hash {got}, not the {wanted} the Hub lists; the download was "
        "removed: pull again"
    )


def remove_file(path: Path) -> None:
    """Remove a file from the cache: its snapshot link, and its blob unless another snapshot links to it."""
    snapshots = next(folder for folder in path.parents if folder.name == "snapshots")
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path and not any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*")):
        blob.unlink(missing_ok=True)
    for folder in path.parents:  # the folders left empty, up to the snapshots
        if folder == snapshots:
            break
        try:
            folder.rmdir()
        except OSError:
            break
