"""A conversation with a model: history, slash commands and the terminal REPL behind ``llamapy chat``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import click

from .llm import LLM

HELP = """commands:
  /reset          forget the conversation (keeps the system prompt)
  /system TEXT    set the system prompt and start over
  /save FILE      save the conversation as JSON
  /load FILE      load a conversation saved with /save
  /stats          timing of the last reply
  /image PATH     attach an image (or audio file) to your next message (needs --mmproj)
  /exit           leave (Ctrl-D works too)
end a line with '\\' to continue on the next line; Ctrl-C stops a reply"""


class ChatSession:
    """Messages so far plus the model; ``ask`` streams the reply and records it."""

    def __init__(self, llm: LLM, system: str | None = None):
        self.llm = llm
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.pending_media: list[str] = []  # attached to the next user message
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def attach(self, path: str) -> None:
        """Attach an image or audio file to the next message."""
        if getattr(self.llm, "mtmd", None) is None:
            raise ValueError("images need a projector: start with --mmproj FILE")
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"no such file: {path}")
        self.pending_media.append(str(Path(path).expanduser()))

    def ask(self, text: str) -> Iterator[str]:
        """Stream the reply to ``text``; the (possibly interrupted) reply joins the history."""
        if self.pending_media:
            parts = [{"type": "image_url", "image_url": {"url": p}} for p in self.pending_media]
            self.pending_media = []
            self.messages.append({"role": "user", "content": [*parts, {"type": "text", "text": text}]})
        else:
            self.messages.append({"role": "user", "content": text})
        reply: list[str] = []
        try:
            for chunk in self.llm.chat(self.messages, stream=True):
                reply.append(chunk)
                yield chunk
        finally:
            self.messages.append({"role": "assistant", "content": "".join(reply)})

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps({"system": self.system, "messages": self.messages}, indent=1))

    def load(self, path: str) -> None:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError(f"{path} is not a conversation saved with /save")
        self.system = data.get("system")
        self.messages = data["messages"]

    # -- terminal ----------------------------------------------------------------------
    def repl(self) -> None:
        _enable_line_editing()
        click.echo("llamapy chat — /help for commands, /exit to leave", err=True)
        while True:
            try:
                text = _read_message()
            except EOFError:
                click.echo(err=True)
                return
            except KeyboardInterrupt:
                click.echo("^C (use /exit to leave)", err=True)
                continue
            if not text.strip():
                continue
            if text.startswith("/"):
                if self._command(text.strip()):
                    return
                continue
            try:
                for chunk in self.ask(text):
                    click.echo(chunk, nl=False)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                click.echo(" [stopped]", nl=False, err=True)
            click.echo()

    def _command(self, line: str) -> bool:
        """Run a slash command; True means leave."""
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if cmd in ("/exit", "/quit"):
                return True
            if cmd == "/reset":
                self.reset()
                click.echo("(conversation cleared)", err=True)
            elif cmd == "/system":
                self.system = arg or None
                self.reset()
                click.echo("(system prompt set; conversation cleared)", err=True)
            elif cmd == "/save" and arg:
                self.save(arg)
                click.echo(f"(saved to {arg})", err=True)
            elif cmd == "/load" and arg:
                self.load(arg)
                click.echo(f"(loaded {len(self.messages)} messages from {arg})", err=True)
            elif cmd == "/image" and arg:
                self.attach(arg)
                click.echo(f"(attached {arg} to your next message)", err=True)
            elif cmd == "/stats":
                stats = self.llm.last_stats
                click.echo(stats.summary() if stats else "(no reply yet)", err=True)
            else:
                click.echo(HELP, err=True)
        except (OSError, ValueError) as e:
            click.echo(f"error: {e}", err=True)
        return False


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (importing it gives input() history and editing)
    except ImportError:  # not available on every platform
        pass


def _read_message() -> str:
    lines = [input("> ")]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(input(". "))
    return "\n".join(lines)
