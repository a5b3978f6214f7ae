"""Chat templates: the model's Jinja template in a sandbox, or llama.cpp's built-in formats."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .._ffi import ffi, lib
from ..errors import ChatTemplateError, TemplateSecurityError
from ..model import Model

Message = Mapping[str, Any]


def builtin_templates() -> list[str]:
    """Names of the formats llama.cpp applies without Jinja (chatml, llama3, ...)."""
    n = lib.llama_chat_builtin_templates(ffi.NULL, 0)
    arr = ffi.new("const char *[]", n)
    lib.llama_chat_builtin_templates(arr, n)
    return sorted(ffi.string(p).decode() for p in arr)


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys,
                      default=_json_default)


def _json_default(value: Any) -> Any:
    """Lazy sequences from filters (``tools | map(attribute='function')``) serialise as lists."""
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks the assistant's tokens with
    it (for training masks); rendering a prompt keeps the body as it is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols", _GenerationTag])
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    env.filters["tojson"] = _tojson
    return env


class ChatTemplate:
    """Turns a list of messages into a prompt.

    Jinja templates (Hugging Face style, as stored in GGUF files) run in jinja2's immutable
    sandbox: a template that reaches for Python internals raises TemplateSecurityError and
    executes nothing. A name from :func:`builtin_templates` uses llama.cpp's own formatter.
    """

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.builtin = source if source in builtin_templates() else None
        self._compiled: jinja2.Template | None = None
        if self.builtin is None:
            try:
                self._compiled = _environment().from_string(source)
            except jinja2.TemplateError as e:
                raise ChatTemplateError(f"the chat template does not parse: {e}") from None

    @classmethod
    def for_model(cls, model: Model, override: str | None = None) -> ChatTemplate:
        """The override, else the model's template, else llama.cpp's chatml."""
        vocab = model.vocab
        bos = vocab.text(vocab.bos) if vocab.bos is not None else ""
        eos = vocab.text(vocab.eos) if vocab.eos is not None else ""
        return cls(override or model.chat_template() or "chatml", bos, eos)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        """The prompt text for ``messages`` (ending with the assistant's turn opener)."""
        _check_messages(messages)
        if self.builtin is not None:
            return _apply_builtin(self.builtin, messages, add_generation_prompt)
        assert self._compiled is not None
        try:
            return self._compiled.render(messages=[_template_message(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt, tools=tools,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except SecurityError as e:
            raise TemplateSecurityError(f"the chat template tried to escape its sandbox and was stopped: {e}") \
                from None
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template failed: {e}") from None


class _JsonArguments(dict):
    """Tool-call arguments as templates expect them: a mapping (to iterate or ``tojson``) that
    reads as JSON text where a template writes or concatenates it as a string."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: Any) -> Any:
        return str(self) + other if isinstance(other, str) else NotImplemented

    def __radd__(self, other: Any) -> Any:
        return other + str(self) if isinstance(other, str) else NotImplemented


def _template_message(message: Message) -> dict[str, Any]:
    """A message with its tool calls' JSON-text arguments turned into mappings, as transformers passes them."""
    msg = dict(message)
    if isinstance(msg.get("tool_calls"), Sequence):
        msg["tool_calls"] = [_template_call(c) for c in msg["tool_calls"]]
    return msg


def _template_call(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    fn = dict(call["function"])
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    if isinstance(args, Mapping):
        fn["arguments"] = _JsonArguments(args)
    return {**call, "function": fn}


def _check_messages(messages: Sequence[Message]) -> None:
    if isinstance(messages, (str, bytes)) or not all(isinstance(m, Mapping) for m in messages):
        raise ChatTemplateError("messages must be a list of {'role': ..., 'content': ...} dicts")
    for m in messages:
        if "role" not in m:
            raise ChatTemplateError(f"a message has no 'role': {dict(m)!r}")


def _apply_builtin(name: str, messages: Sequence[Message], add_ass: bool) -> str:
    keep = []
    arr = ffi.new("struct llama_chat_message[]", len(messages))
    for item, m in zip(arr, messages):
        role = ffi.new("char[]", str(m["role"]).encode())
        content = ffi.new("char[]", str(m.get("content") or "").encode())
        keep += [role, content]
        item.role, item.content = role, content
    size = sum(len(str(m.get("content") or "")) for m in messages) * 2 + 256
    while True:
        buf = ffi.new("char[]", size)
        n = lib.llama_chat_apply_template(name.encode(), arr, len(messages), add_ass, buf, size)
        if n < 0:
            raise ChatTemplateError(f"llama.cpp could not apply the {name!r} chat format")
        if n <= size:
            return ffi.unpack(buf, n).decode("utf-8", "replace")
        size = n
