"""The Responses API's objects: a response, its output items and usage, a deletion, and a page of input items."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from palaver.core.errors import InvalidRequest, PalaverError
from palaver.core.parameters import GenerationParams
from palaver.core.types import Reply, ToolCall, Usage
from palaver.core.validation import RequestModel, neutral_or_refused
from palaver.web.responses.items import call_item_id, reasoning_item_id
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.tools import described_choice

Status = Literal["in_progress", "completed", "incomplete", "failed"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
MAX_PAGE_SIZE = 100


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def reply_status(reply: Reply) -> Literal["completed", "incomplete"]:
    """Say how a reply ended: incomplete when max_output_tokens cut it off."""
    return "incomplete" if reply.finish_reason == "length" else "completed"


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    """A thinking model's reasoning, before its answer, as OpenAI's open-weight models (and vLLM, Ollama) give it."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    status: ItemStatus
    summary: list[Any] = Field(default_factory=list)  # the reasoning is given whole: it needs no summary
    content: list[ReasoningText]

    @classmethod
    def of(cls, reasoning: str, message_id: str, status: ItemStatus = "completed") -> ReasoningItem:
        """Describe a reply's reasoning, as the item before its message (message_id)."""
        return cls(id=reasoning_item_id(message_id), status=status, content=[ReasoningText(text=reasoning)])


class FunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    status: ItemStatus
    call_id: str
    name: str
    arguments: str

    @classmethod
    def of(cls, call: ToolCall, status: ItemStatus) -> FunctionCall:
        return cls(id=call_item_id(call.id), status=status, call_id=call.id, name=call.name, arguments=call.arguments)


OutputItem = ReasoningItem | OutputMessage | FunctionCall


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        return cls(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
            total_tokens=usage.total_tokens,
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """A response as the Responses API gives one: its settings echoed, its output items, and its tokens."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: None = None
    metadata: dict[str, str]
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: dict[str, Any]
    service_tier: str = "default"
    store: bool
    temperature: float
    text: dict[str, Any]
    tool_choice: Any
    tools: list[dict[str, Any]]
    top_logprobs: int = 0
    top_p: float
    truncation: Literal["auto", "disabled"]
    usage: ResponseUsage | None = None
    user: str | None

    @classmethod
    def started(cls, given: ResponsesRequest, model: str, params: GenerationParams) -> ResponseObject:
        """Describe a response before its output: what the request asked for, with the values it runs with."""
        text_format = given.text_format.described() if given.text_format is not None else {"type": "text"}
        reasoning = given.reasoning.model_dump() if given.reasoning is not None else {"effort": None, "summary": None}
        return cls(
            id=new_response_id(),
            created_at=int(time.time()),
            status="in_progress",
            instructions=given.instructions,
            max_output_tokens=params.max_new_tokens,
            metadata=given.metadata or {},
            model=model,
            parallel_tool_calls=given.parallel_tool_calls is not False,
            previous_response_id=given.previous_response_id,
            reasoning=reasoning,
            store=given.store,
            temperature=0.0 if params.greedy else params.temperature,
            text={"format": text_format, "verbosity": "medium"},
            tool_choice=described_choice(given.tool_choice),
            tools=[tool.described() for tool in given.tools or ()],
            top_p=params.top_p,
            truncation=given.truncation or "disabled",
            user=given.user,
        )

    def finished(self, reply: Reply, message_id: str) -> ResponseObject:
        """Return this response with the reply's output: its reasoning and its text (each when it has any, the text
        as message_id), then its calls."""
        status = reply_status(reply)
        thought = [ReasoningItem.of(reply.reasoning, message_id)]
        message = [OutputMessage(id=message_id, status="completed", content=[OutputText(text=reply.text)])]
        output: list[OutputItem] = [
            *(thought if reply.reasoning else []),
            *(message if reply.text else []),
            *(FunctionCall.of(call, "completed") for call in reply.tool_calls),
        ]
        if output:  # only the last item can have been cut off
            output[-1] = output[-1].model_copy(update={"status": status})
        return self.model_copy(
            update={
                "status": status,
                "completed_at": int(time.time()) if status == "completed" else None,
                "incomplete_details": IncompleteDetails() if status == "incomplete" else None,
                "output": output,
                "usage": ResponseUsage.of(reply.usage),
            }
        )

    def failed(self, error: PalaverError) -> ResponseObject:
        """Return this response as failed by error, mid-stream."""
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        return self.model_copy(update={"status": "failed", "error": ResponseError(code=code, message=error.message)})


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: Literal[True] = True


class InputItemsQuery(RequestModel):
    """GET /v1/responses/{id}/input_items' query: a page of the input items, newest first unless asked."""

    limit: int = Field(20, ge=1, le=MAX_PAGE_SIZE, description="How many items a page holds.")
    order: Literal["asc", "desc"] = Field("desc", description="desc (the default): the last item first.")
    after: str | None = Field(None, min_length=1, max_length=256, description="The id of the item the page follows.")
    include: Any = Field(None, description="Refused: an item holds no extra data to include.")

    @field_validator("include")
    @classmethod
    def _nothing_to_include(cls, value: Any) -> Any:
        return neutral_or_refused(value, (), "include is not supported: an item holds no extra data to include")


class RetrieveQuery(RequestModel):
    """GET /v1/responses/{id}'s query: the stored response, whole."""

    stream: bool | None = Field(None, description="Only false: a stored response is not streamed again.")
    include_obfuscation: bool | None = Field(None, description="Accepted: nothing is streamed to pad.")
    include: Any = Field(None, description="Refused: a response holds no extra data to include.")
    starting_after: Any = Field(None, description="Refused: a stored response is not streamed again.")

    @field_validator("stream", "include", "starting_after")
    @classmethod
    def _not_streamed(cls, value: Any, info: ValidationInfo) -> Any:
        return neutral_or_refused(
            value, (False,), f"{info.field_name} is not supported: a stored response is sent whole"
        )


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def page(cls, items: list[dict[str, Any]], query: InputItemsQuery) -> InputItemList:
        """Return the page of items query asks for: in its order, from after the item it names."""
        ordered = items if query.order == "asc" else items[::-1]
        start = 0
        if query.after is not None:
            ids = [item["id"] for item in ordered]
            if query.after not in ids:
                raise InvalidRequest("'after' must be the id of one of this response's input items", param="after")
            start = ids.index(query.after) + 1
        shown = ordered[start : start + query.limit]
        return cls(
            data=shown,
            first_id=shown[0]["id"] if shown else None,
            last_id=shown[-1]["id"] if shown else None,
            has_more=start + query.limit < len(ordered),
        )
