"""LangChain integrations (``langchain-core``): an LLM with streaming callbacks, a chat model
with ``bind_tools``, and Embeddings, each running a local GGUF model in-process."""
from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping, Optional, Sequence

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel, LLM
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import BaseModel, ConfigDict, PrivateAttr
except ImportError as e:
    raise ImportError(f"llamapy's LangChain integration needs its extra: pip install 'llamapy[langchain]' ({e})") \
        from None

from ..generation.llm import LLM as _LocalLLM


class _LocalModel(BaseModel):
    """The fields both LangChain models share, and the llamapy LLM they load on first use."""

    model_path: str
    temperature: float = 0.7
    max_tokens: int = 512
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    n_gpu_layers: int = 99
    n_ctx: int = 4096
    n_threads: Optional[int] = None
    seed: Optional[int] = None
    stop: Optional[list[str]] = None
    streaming: bool = False

    _llm: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _local(self) -> _LocalLLM:
        if self._llm is None:
            self._llm = _LocalLLM(self.model_path, n_gpu_layers=self.n_gpu_layers, n_ctx=self.n_ctx,
                                  n_threads=self.n_threads)
        return self._llm

    def _settings(self, stop: Optional[list[str]], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        settings = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_k": self.top_k,
                    "top_p": self.top_p, "repeat_penalty": self.repeat_penalty, "seed": self.seed,
                    "add_bos": None}  # BOS as the model wants it
        stops = stop if stop is not None else self.stop
        if stops:
            settings["stop_sequences"] = tuple(stops)
        settings.update({k: v for k, v in kwargs.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")})
        return settings

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "top_k": self.top_k, "top_p": self.top_p, "repeat_penalty": self.repeat_penalty}

    def close(self) -> None:
        """Free the model now (it is loaded again on the next call)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


class LlamapyLLM(_LocalModel, LLM):
    """A LangChain LLM (text in, text out). With ``streaming=True`` (or ``.stream()``) every
    new piece of text goes to the callbacks' ``on_llm_new_token``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "llamapy"

    def _call(self, prompt: str, stop: Optional[list[str]] = None,
              run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> str:
        if self.streaming:
            return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
        with self._lock:
            return self._local().generate(prompt, **self._settings(stop, kwargs))

    def _stream(self, prompt: str, stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        with self._lock:
            for text in self._local().stream(prompt, **self._settings(stop, kwargs)):
                chunk = GenerationChunk(text=text)
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


CyllamaLLM = LlamapyLLM  # the reference's name


class LlamapyChatModel(_LocalModel, BaseChatModel):
    """A LangChain chat model on the model's chat template; ``bind_tools`` gives it tools,
    which come back as ``AIMessage.tool_calls`` (the model's native call syntax is parsed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    tool_format: Optional[str] = None  # a tool-call format name, instead of detecting it from the template

    @property
    def _llm_type(self) -> str:
        return "llamapy-chat"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, parallel_tool_calls: bool = True,
                   **kwargs: Any) -> Any:
        """This model with ``tools`` (functions, pydantic models, LangChain tools or OpenAI dicts)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required", "any"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        if tool_choice == "any":
            tool_choice = "required"
        return self.bind(tools=formatted, tool_choice=tool_choice or "auto",
                         parallel_tool_calls=parallel_tool_calls, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        if self.streaming and not kwargs.get("tools"):
            chunks = list(self._stream(messages, stop, run_manager, **kwargs))
            text = "".join(str(c.message.content) for c in chunks)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
        msgs = convert_to_openai_messages(messages)
        with self._lock:
            llm = self._local()
            if kwargs.get("tools"):
                reply = self._with_tools(llm, msgs, stop, kwargs)
            else:
                reply = {"content": llm.chat(msgs, **self._settings(stop, kwargs))}
        return ChatResult(generations=[ChatGeneration(message=_ai_message(reply))])

    def _with_tools(self, llm: _LocalLLM, msgs: list[dict], stop: Optional[list[str]],
                    kwargs: Mapping[str, Any]) -> dict[str, Any]:
        from ..agent.chat import chat_with_tools

        return chat_with_tools(llm, msgs, kwargs["tools"], kwargs.get("tool_choice", "auto"),
                               parallel_tool_calls=kwargs.get("parallel_tool_calls", True),
                               tool_format=self.tool_format, **self._settings(stop, kwargs))

    def _stream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools"):  # calls are only known once parsed: one chunk with the whole reply
            result = self._generate(messages, stop, None, **kwargs)
            message = result.generations[0].message
            yield ChatGenerationChunk(message=AIMessageChunk(content=message.content,
                                                             tool_calls=getattr(message, "tool_calls", [])))
            return
        msgs = convert_to_openai_messages(messages)
        with self._lock:
            for text in self._local().chat(msgs, stream=True, **self._settings(stop, kwargs)):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


def _ai_message(reply: Mapping[str, Any]) -> AIMessage:
    import json

    calls = []
    for call in reply.get("tool_calls") or ():
        fn = call["function"]
        try:
            args = json.loads(fn["arguments"] or "{}")
        except json.JSONDecodeError:
            args = {"__raw__": fn["arguments"]}
        calls.append({"name": fn["name"], "args": args if isinstance(args, dict) else {"value": args},
                      "id": call.get("id"), "type": "tool_call"})
    return AIMessage(content=reply.get("content") or "", tool_calls=calls)


class LlamapyEmbeddings(Embeddings):
    """LangChain Embeddings from a GGUF embedding model (llamapy's Embedder, normalised vectors)."""

    def __init__(self, model_path: str, *, n_gpu_layers: int = 99, n_threads: Optional[int] = None,
                 pooling: Optional[str] = None, normalize: bool = True):
        from ..embed import Embedder

        self.embedder = Embedder(model_path, n_gpu_layers=n_gpu_layers, n_threads=n_threads, pooling=pooling,
                                 normalize=normalize)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts)).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed(text).tolist()

    def close(self) -> None:
        self.embedder.close()


CyllamaChatModel = LlamapyChatModel
CyllamaEmbeddings = LlamapyEmbeddings

__all__ = ["LlamapyLLM", "LlamapyChatModel", "LlamapyEmbeddings", "CyllamaLLM", "CyllamaChatModel",
           "CyllamaEmbeddings"]
