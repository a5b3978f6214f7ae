"""Tool calling and agents: native tool-call formats per model family, streaming parsing into
OpenAI deltas, grammar-forced calls, an agent loop over Python functions, and LlamaAgent."""
from .chat import chat_with_tools
from .formats import FORMATS, ToolFormat, detect_format, get_format
from .grammar import ToolGrammar, build_tool_grammar
from .llama_agent import AgentHTTPError, LlamaAgent
from .loop import Agent, AgentEvent, AgentResult
from .messages import ParsedMessage, ToolCall, merge_deltas
from .parser import StreamParser, parse_reply
from .tools import Tool

__all__ = ["Agent", "AgentEvent", "AgentResult", "LlamaAgent", "AgentHTTPError", "Tool", "ToolCall",
           "ParsedMessage", "StreamParser", "parse_reply", "merge_deltas", "ToolFormat", "FORMATS", "detect_format",
           "get_format", "ToolGrammar", "build_tool_grammar", "chat_with_tools"]
