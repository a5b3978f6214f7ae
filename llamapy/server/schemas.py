"""OpenAI's request and response shapes as pydantic models: they validate requests and give the
server its OpenAPI schema. Fields llama-server adds (top_k, min_p, ignore_eos, ...) are accepted too."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

Finite = ConfigDict(allow_inf_nan=False, extra="ignore")
StopField = Optional[Union[str, Annotated[list[str], Field(max_length=16)]]]


class _Request(BaseModel):
    model_config = Finite


class SamplingFields(_Request):
    """Sampling settings both endpoints take (None: the server's default)."""

    model: Optional[str] = Field(None, description="ignored: the server serves the model it loaded")
    max_tokens: Optional[int] = Field(None, ge=0, description="tokens to generate at most")
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    n: Optional[int] = Field(None, ge=1, le=1, description="choices per prompt: only 1")
    stream: bool = False
    stop: StopField = Field(None, description="up to 16 stop sequences")
    seed: Optional[int] = Field(None, ge=-(2 ** 63), le=2 ** 64 - 1)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = Field(None, description="token id -> bias from -100 to 100")
    user: Optional[str] = None
    # llama-server's extensions
    top_k: Optional[int] = Field(None, ge=0, le=1_000_000)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=0, le=10)
    repeat_last_n: Optional[int] = Field(None, ge=-1, le=1_000_000)
    mirostat: Optional[Literal[0, 1, 2]] = None
    mirostat_tau: Optional[float] = Field(None, ge=0, le=100)
    mirostat_eta: Optional[float] = Field(None, ge=0, le=1)
    ignore_eos: Optional[bool] = None
    grammar: Optional[str] = Field(None, description="a GBNF grammar the output must follow")


class StreamOptions(_Request):
    include_usage: bool = False


class JSONSchemaSpec(_Request):
    name: str = "response"
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = None

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore", populate_by_name=True)


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaSpec] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema", description="json_object: the schema to follow")

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore", populate_by_name=True)


class ContentPart(_Request):
    type: str
    text: Optional[str] = None
    image_url: Optional[Union[str, dict[str, Any]]] = None  # with --mmproj: file://, data: URLs
    input_audio: Optional[dict[str, Any]] = None  # with --mmproj and an audio projector: base64 data


class FunctionCall(_Request):
    name: str
    arguments: str = ""


class ToolCallIn(_Request):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None


class FunctionSpec(_Request):
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionSpec


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    stream_options: Optional[StreamOptions] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str]] = Field(..., description="a prompt, or a list of prompts (one choice each)")
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Optional[str] = Field(None, description="not supported: must be empty")
    stream_options: Optional[StreamOptions] = None
    response_format: Optional[ResponseFormat] = None


class TokenizeRequest(_Request):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


TokenId = Annotated[int, Field(ge=0, le=2 ** 31 - 1)]


class DetokenizeRequest(_Request):
    tokens: list[TokenId] = Field(..., description="special tokens come back as their text")


class EmbeddingRequest(_Request):
    input: Union[str, Annotated[list[str], Field(min_length=1, max_length=2048)]]
    model: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None


class RerankRequest(_Request):
    query: str
    documents: list[str] = Field(..., min_length=1, max_length=1024)
    model: Optional[str] = None
    top_n: Optional[int] = Field(None, ge=1)
    return_documents: bool = True


# -- responses (documentation: the handlers build these as plain dicts) ------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Optional[dict[str, int]] = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: Optional[str] = None
    tool_calls: Optional[list[ToolCallOut]] = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: Optional[dict[str, Any]] = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Optional[Literal["stop", "length"]] = None
    logprobs: Optional[dict[str, Any]] = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    message: Optional[str] = None


class TokenizeResponse(BaseModel):
    tokens: list[Union[int, dict[str, Any]]]


class DetokenizeResponse(BaseModel):
    content: str


class EmbeddingItem(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str]


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


class RerankItem(BaseModel):
    index: int
    relevance_score: float
    document: Optional[dict[str, str]] = None


class RerankList(BaseModel):
    object: Literal["list"]
    results: list[RerankItem]
    model: str
