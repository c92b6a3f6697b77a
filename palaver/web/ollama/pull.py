"""Ollama's /api/pull: a GGUF model pulled from the Hugging Face Hub (hf.co/OWNER/REPO:QUANT), its progress in lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator, model_validator

from palaver.core.errors import ConfigurationError, Forbidden, InvalidRequest, PalaverError
from palaver.core.hub_sources import from_ollama_name, is_hub_source
from palaver.core.validation import RequestModel, body_error, neutral_or_refused
from palaver.models.progress import Progress, PullState
from palaver.web.body import read_json
from palaver.web.ollama.events import json_line, json_lines
from palaver.web.security import accounts_on, keys_required, require_admin
from palaver.web.services import services


class PullFailed(PalaverError):
    """A pull that ended without the model: the Hub has no such file, cannot be reached, or sent wrong bytes."""


class PullRequest(RequestModel):
    """POST /ollama/api/pull: the model, as model (or name, as older clients send it), and whether to stream."""

    model: str | None = Field(None, description="hf.co/OWNER/REPO:QUANT, or a source as PALAVER_MODEL takes it.")
    name: str | None = Field(None, description="The model, as older clients name the field.")
    insecure: bool = Field(False, description="Accepted false: the Hub is always reached over verified HTTPS.")
    stream: bool = Field(True, description="Stream the progress as lines (Ollama's default), or answer once done.")

    @field_validator("insecure")
    @classmethod
    def _verified(cls, value: Any) -> Any:
        return neutral_or_refused(value, (False,), "insecure pulls are not supported: the Hub is reached over HTTPS")

    @model_validator(mode="after")
    def _one_model(self) -> PullRequest:
        if not (self.model or self.name):
            raise body_error("'model' is required: the model to pull, as hf.co/OWNER/REPO:QUANT", "model")
        return self

    @property
    def source(self) -> str:
        """Return the hf: source the model names, or raise InvalidRequest for a name the Hub does not hold."""
        given = from_ollama_name(self.model or self.name or "")
        if not is_hub_source(given):
            raise InvalidRequest(
                f"'{given[:100]}' is not a model on the Hugging Face Hub: Palaver pulls GGUF files, named as "
                "hf.co/OWNER/REPO:QUANT",
                param="model",
            )
        return given


VERIFYING = {"status": "verifying sha256 digest"}


def pull_model():
    """Pull a model in the background (as the library's page does); answer its progress as lines, or once done."""
    if accounts_on():
        require_admin()
    elif not keys_required():
        raise Forbidden(
            "pulling models is open only with PALAVER_API_KEYS set: it fills the disk", code="library_needs_keys"
        )
    given = PullRequest.parse(read_json())
    try:
        progress = services().pulls.start(given.source)
    except ConfigurationError as exc:
        raise InvalidRequest(str(exc), param="model") from None
    if given.stream:
        return json_lines(json_line(line) for line in progress_lines(progress))
    last = list(progress.follow())[-1]
    if last.status == "failed":
        raise PullFailed(last.error)
    return {"status": "success"}


def progress_lines(progress: Progress) -> Iterator[dict[str, Any]]:
    """Say how a pull goes as Ollama does: the manifest, each file's bytes by its digest, the check, success."""
    yield {"status": "pulling manifest"}
    said: dict[str, Any] | None = None
    last_download: dict[str, Any] | None = None  # the last line said of a file's bytes
    whole: set[str] = set()  # the files said whole
    for state in progress.follow():
        # A file whose last bytes came between two looks at the pull is said whole before what follows it.
        digest = f"sha256:{state.sha256}" if state.sha256 else ""
        if last_download and last_download["digest"] not in whole and digest not in ("", last_download["digest"]):
            said = {**last_download, "completed": last_download["total"]}  # the next file began
            whole.add(said["digest"])
            yield said
        if state.status in ("verifying", "done") and digest and digest not in whole:
            said = download_line(state, state.total)
            whole.add(digest)
            yield said
        if state.status == "done" and said != VERIFYING:
            yield VERIFYING  # a check that ended between two looks at the pull was still made: say so, in its place
        for line in ollama_lines(state):
            if line != said:  # a heartbeat repeats the state: its line is said once
                said = line
                if line.get("digest"):
                    last_download = line
                    if line["completed"] == line["total"]:
                        whole.add(line["digest"])
                yield line


def download_line(state: PullState, completed: int) -> dict[str, Any]:
    """Return the line Ollama sends for a file's bytes, completed of them."""
    return {
        "status": f"pulling {state.sha256[:12]}",
        "digest": f"sha256:{state.sha256}",
        "total": state.total,
        "completed": completed,
    }


def ollama_lines(state: PullState) -> list[dict[str, Any]]:
    """Return the lines Ollama would send at a pull's state."""
    if state.status == "downloading" and state.sha256:
        return [download_line(state, state.completed)]
    if state.status == "verifying":
        return [VERIFYING]
    if state.status == "done":
        return [{"status": "writing manifest"}, {"status": "success"}]
    return [{"error": state.error}] if state.status == "failed" else []
