"""LlamaAgent: llama-py's agent API over any OpenAI-compatible server (llamapy's own server,
llama.cpp's ``llama-server --jinja``, ...), with nothing but the standard library's urllib."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Sequence

from ..errors import LlamaError


class AgentHTTPError(LlamaError):
    """The server could not be reached or refused the request."""


class LlamaAgent:
    """Chat with tools through ``POST {base_url}/v1/chat/completions``; keeps the conversation.

    ``chat`` returns the server's raw response dict; tool results go back with
    :meth:`add_tool_result` before the next ``chat``.
    """

    def __init__(self, base_url: str = "http://localhost:8080", model: str | None = None,
                 api_key: str | None = None, system_prompt: str | None = None, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.system_prompt = system_prompt
        self.messages: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (keeps the system prompt)."""
        self.messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    @staticmethod
    def define_tool(name: str, description: str = "", parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """An OpenAI tool definition."""
        if not name or not isinstance(name, str):
            raise ValueError("a tool needs a name")
        return {"type": "function", "function": {"name": name, "description": description,
                                                 "parameters": parameters or {"type": "object", "properties": {}}}}

    def chat(self, message: str | None = None, tools: Sequence[dict[str, Any]] | None = None,
             tool_choice: Any = None, **params: Any) -> dict[str, Any]:
        """Send ``message`` (None: continue after tool results) and return the raw response."""
        if message is not None:
            self.messages.append({"role": "user", "content": message})
        body: dict[str, Any] = {"messages": self.messages, **params}
        if self.model:
            body.setdefault("model", self.model)
        if tools:
            body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        response = self._post("/v1/chat/completions", body)
        try:
            reply = response["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise AgentHTTPError(f"the server's reply has no choices[0].message: {str(response)[:300]}") from None
        self.messages.append({k: v for k, v in reply.items() if v is not None or k == "content"})
        return response

    def add_tool_result(self, tool_call_id: str, content: Any, name: str | None = None) -> None:
        """Give the model the result of one of its calls."""
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        msg = {"role": "tool", "tool_call_id": tool_call_id, "content": text}
        if name:
            msg["name"] = name
        self.messages.append(msg)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise AgentHTTPError(f"{self.base_url}{path} answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise AgentHTTPError(f"cannot reach {self.base_url}: {getattr(e, 'reason', e)}") from None
        except ValueError as e:
            raise AgentHTTPError(f"{self.base_url}{path} did not answer JSON: {e}") from None


__all__ = ["LlamaAgent", "AgentHTTPError"]
