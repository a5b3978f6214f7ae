"""`llamapy complete` and `llamapy chat`."""
from __future__ import annotations

import sys
from typing import Any, Callable

import click

from .app import fail_cleanly, load, main, resolve_model, sampling_options, setup


def speculative_options(fn: Callable) -> Callable:
    """--draft-model / --speculative / --n-draft: speculative decoding (same output, faster when drafts hit)."""
    options = [
        click.option("--draft-model", help="smaller model with the same vocabulary that drafts tokens (file or "
                                           "catalog name)"),
        click.option("--speculative", type=click.Choice(["ngram", "draft"]),
                     help="ngram: draft from n-grams of the text so far (no second model); draft: --draft-model"),
        click.option("--n-draft", type=click.IntRange(min=1), help="most tokens drafted at a time"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def media_options(fn: Callable) -> Callable:
    """--mmproj / --image: images (and audio) in the prompt through a multimodal projector."""
    options = [
        click.option("--mmproj", type=click.Path(dir_okay=False), help="multimodal projector (mmproj GGUF) for "
                                                                        "images and audio"),
        click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
                     help="image or audio file for the prompt (repeatable; needs --mmproj)"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _media(o: dict) -> dict:
    if o["images"] and not o["mmproj"]:
        raise click.UsageError("--image needs a projector: add --mmproj FILE")
    return {"mmproj": o["mmproj"]} if o["mmproj"] else {}


def _speculation(o: dict) -> dict:
    draft = resolve_model(o["draft_model"]) if o["draft_model"] else None
    return dict(draft_model=draft, speculative=o["speculative"], n_draft=o["n_draft"])


@main.command()
@click.argument("prompt", required=False)
@sampling_options
@speculative_options
@media_options
@fail_cleanly
def complete(prompt: str | None, **o: Any) -> None:
    """Continue PROMPT (or stdin when PROMPT is '-' or missing) and stream the text to stdout."""
    setup(o)
    if prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise click.UsageError("give a prompt, or '-' to read it from stdin")
        prompt = sys.stdin.read()
    with load(o, **_speculation(o), **_media(o)) as llm:
        try:
            for chunk in llm.stream(prompt, **({"media": list(o["images"])} if o["images"] else {})):
                click.echo(chunk, nl=False)
                sys.stdout.flush()
        except KeyboardInterrupt:
            click.echo("\n[interrupted]", err=True)
        click.echo()
        if o["stats"] and llm.last_stats:
            click.echo(llm.last_stats.summary(), err=True)


@main.command()
@click.option("--system", help="system prompt")
@click.option("--tool", "tools", multiple=True, metavar="MODULE:FUNCTION",
              help="a Python function the model may call (repeatable); replies come from an agent")
@sampling_options
@speculative_options
@media_options
@fail_cleanly
def chat(system: str | None, tools: tuple[str, ...], **o: Any) -> None:
    """Talk with a model. Interactive in a terminal; with piped stdin, answers it and exits.

    In the REPL: end a line with '\\' to continue it; /reset, /system TEXT, /save FILE,
    /load FILE, /image PATH, /stats, /help, /exit. Ctrl-C stops the current reply.
    """
    from ..agent.session import AgentSession, load_function
    from ..generation.chat_session import ChatSession

    setup(o)
    functions = [load_function(t) for t in tools]  # a bad --tool fails before the model loads
    with load(o, **_speculation(o), **_media(o)) as llm:
        session = AgentSession(llm, functions, system) if tools else ChatSession(llm, system)
        for path in o["images"]:
            session.attach(path)
        if not sys.stdin.isatty():
            text = sys.stdin.read().strip()
            if not text:
                raise click.UsageError("nothing to answer: stdin was empty")
            for chunk in session.ask(text):
                click.echo(chunk, nl=False)
            click.echo()
        else:
            session.repl()
        if o["stats"] and llm.last_stats:
            click.echo(llm.last_stats.summary(), err=True)
