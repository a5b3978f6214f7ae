"""The ``llamapy`` command line: complete, chat, pull, models, info."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__


class Verbose:
    on = False


def _fail_cleanly(fn: Callable) -> Callable:
    """Turn user-facing errors into one line on stderr (a traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import LlamaError

        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except (LlamaError, OSError, ValueError) as e:
            if Verbose.on:
                raise
            raise click.ClickException(str(e)) from None

    return wrapper


def _resolve_model(model: str | None) -> Path:
    """-m value (a path or a catalog name), else $LLAMAPY_MODEL, else the default catalog model."""
    from .catalog import CATALOG, DEFAULT_MODEL, cached_path, pull

    name = model or os.environ.get("LLAMAPY_MODEL") or DEFAULT_MODEL
    if name in CATALOG:
        path = cached_path(name)
        if path is None:
            click.echo(f"fetching {name} (first use) ...", err=True)
            path = pull(name)
        return path
    return Path(name).expanduser()


def sampling_options(fn: Callable) -> Callable:
    options = [
        click.option("-m", "--model", help="GGUF file or catalog name [env LLAMAPY_MODEL; default: a small model]"),
        click.option("-n", "--max-tokens", type=int, default=256, show_default=True, help="tokens to generate"),
        click.option("-t", "--temperature", type=float, default=0.8, show_default=True, help="0 = greedy"),
        click.option("--top-k", type=int, default=40, show_default=True),
        click.option("--top-p", type=float, default=0.95, show_default=True),
        click.option("--min-p", type=float, default=0.05, show_default=True),
        click.option("--repeat-penalty", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, help="random seed (default: random)"),
        click.option("--stop", "stop", multiple=True, help="stop sequence (repeatable)"),
        click.option("--json-schema", type=click.Path(dir_okay=False), help="constrain output to a JSON schema file"),
        click.option("--grammar", type=click.Path(dir_okay=False), help="constrain output to a GBNF grammar file"),
        click.option("--ctx", "n_ctx", type=int, help="context size (default: model's, at most 4096)"),
        click.option("--threads", type=int, help="CPU threads (default: all available)"),
        click.option("-ngl", "--n-gpu-layers", type=int, help="layers to offload to the GPU"),
        click.option("--stats", is_flag=True, help="print timing statistics to stderr"),
        click.option("-v", "--verbose", is_flag=True, help="show llama.cpp's log and full tracebacks"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _settings(o: dict) -> dict:
    """GenerationConfig fields from the common options."""
    settings = dict(max_tokens=o["max_tokens"], temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"],
                    min_p=o["min_p"], repeat_penalty=o["repeat_penalty"], seed=o["seed"],
                    stop_sequences=tuple(o["stop"]), n_ctx=o["n_ctx"], n_threads=o["threads"],
                    n_gpu_layers=o["n_gpu_layers"])
    if o["json_schema"]:
        settings["json_schema"] = json.loads(_read_file(o["json_schema"], "JSON schema"))
    if o["grammar"]:
        settings["grammar"] = _read_file(o["grammar"], "grammar")
    return settings


def _read_file(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p.read_text()


def _setup(o: dict) -> None:
    Verbose.on = o["verbose"]
    if o["verbose"]:
        from . import set_verbose

        set_verbose(True)


def _load(o: dict, **extra: Any):
    from .generate import LLM

    return LLM(_resolve_model(o["model"]), progress=sys.stderr.isatty(), **_settings(o), **extra)


@click.group()
@click.version_option(__version__, prog_name="llamapy")
def main() -> None:
    """Run local GGUF models with llama.cpp."""


@main.command()
@click.argument("prompt", required=False)
@sampling_options
@_fail_cleanly
def complete(prompt: str | None, **o: Any) -> None:
    """Continue PROMPT (or stdin when PROMPT is '-' or missing) and stream the text to stdout."""
    _setup(o)
    if prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise click.UsageError("give a prompt, or '-' to read it from stdin")
        prompt = sys.stdin.read()
    with _load(o) as llm:
        try:
            for chunk in llm.stream(prompt):
                click.echo(chunk, nl=False)
                sys.stdout.flush()
        except KeyboardInterrupt:
            click.echo("\n[interrupted]", err=True)
        click.echo()
        if o["stats"] and llm.last_stats:
            click.echo(llm.last_stats.summary(), err=True)


@main.command()
@click.option("--system", help="system prompt")
@sampling_options
@_fail_cleanly
def chat(system: str | None, **o: Any) -> None:
    """Talk with a model. Interactive in a terminal; with piped stdin, answers it and exits.

    In the REPL: end a line with '\\' to continue it; /reset, /system TEXT, /save FILE,
    /load FILE, /stats, /help, /exit. Ctrl-C stops the current reply.
    """
    from .chat_session import ChatSession

    _setup(o)
    with _load(o) as llm:
        session = ChatSession(llm, system)
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


@main.command()
@click.argument("name", required=False)
@_fail_cleanly
def pull(name: str | None) -> None:
    """Fetch a model from the catalog into the model cache (default: the small default model)."""
    from .catalog import DEFAULT_MODEL, pull as do_pull

    path = do_pull(name or DEFAULT_MODEL)
    click.echo(str(path))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json: bool) -> None:
    """List the catalog and which models are already cached."""
    from .catalog import CATALOG, cached_path, models_dir

    rows = []
    for name, entry in CATALOG.items():
        path = cached_path(name)
        rows.append({"name": name, "cached": path is not None, "path": str(path) if path else None,
                     "description": entry.description})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"model cache: {models_dir()}")
    for r in rows:
        mark = "*" if r["cached"] else " "
        click.echo(f" {mark} {r['name']:<24} {r['description']}")
    click.echo("(* = cached; fetch with: llamapy pull NAME)")


@main.group()
def gguf() -> None:
    """Read and edit GGUF files."""


@gguf.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--tensors", is_flag=True, help="list every tensor: name, type, shape, size")
@click.option("--json", "as_json", is_flag=True, help="everything, machine-readable")
@click.option("--key", help="print one metadata value in full")
@_fail_cleanly
def gguf_inspect(path: str, tensors: bool, as_json: bool, key: str | None) -> None:
    """Summarise a GGUF file (metadata and tensor infos; tensor data is never read)."""
    from .gguf_report import inspect

    inspect(path, tensors=tensors, as_json=as_json, key=key)


@gguf.command("set")
@click.argument("path", type=click.Path())
@click.argument("key")
@click.argument("value")
@click.option("-o", "--output", required=True, type=click.Path(), help="where to write the edited file")
@click.option("--type", "type_", help="GGUF type (u32, i64, f32, bool, str, ...); default: the key's current type")
@_fail_cleanly
def gguf_set(path: str, key: str, value: str, output: str, type_: str | None) -> None:
    """Write a copy of PATH with KEY set to VALUE."""
    from .gguf_report import set_value

    set_value(path, key, value, output, type_)


@gguf.command("remove")
@click.argument("path", type=click.Path())
@click.argument("key")
@click.option("-o", "--output", required=True, type=click.Path(), help="where to write the edited file")
@_fail_cleanly
def gguf_remove(path: str, key: str, output: str) -> None:
    """Write a copy of PATH without KEY."""
    from .gguf import GGUFFile

    with GGUFFile.open(path) as g:
        if key not in g:
            raise ValueError(f"{path} has no key {key!r}")
        g.remove(key).write(output)
    click.echo(output)


def _parse_size_mb(text: str) -> list[float]:
    """'8GiB,24GB,512' -> MiB per device (a bare number is MiB)."""
    units = {"": 1, "mib": 1, "mb": 1e6 / 2**20, "m": 1, "gib": 1024, "gb": 1e9 / 2**20, "g": 1024,
             "tib": 1024**2, "tb": 1e12 / 2**20, "kib": 1 / 1024}
    out = []
    for part in text.split(","):
        m = __import__("re").fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", part)
        if not m or m.group(2).lower() not in units:
            raise click.BadParameter(f"not a size: {part!r} (examples: 8GiB, 24GB, 512MiB)", param_hint="--vram")
        out.append(float(m.group(1)) * units[m.group(2).lower()])
    return out


@main.command()
@click.option("-m", "--model", help="GGUF file or catalog name [env LLAMAPY_MODEL]")
@click.option("--vram", help="memory per GPU, comma-separated (e.g. 8GiB or 24GiB,24GiB); default: free memory of the GPUs ggml sees")
@click.option("--ctx", "n_ctx", type=int, help="context size (default: the model's training context)")
@click.option("--cache-type", default="f16", show_default=True, help="KV cache type: f16, q8_0, q4_0, ...")
@click.option("--parallel", "n_seq_max", type=int, default=1, show_default=True, help="sequences sharing the context")
@click.option("--ubatch", "n_ubatch", type=int, default=512, show_default=True)
@click.option("-ngl", "--n-gpu-layers", type=int, help="with --exact: the layers to place on the GPU")
@click.option("--exact", is_flag=True, help="ask llama.cpp itself (loads the model without allocating)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-v", "--verbose", is_flag=True)
@_fail_cleanly
def estimate(model: str | None, vram: str | None, n_ctx: int | None, cache_type: str, n_seq_max: int,
             n_ubatch: int, n_gpu_layers: int | None, exact: bool, as_json: bool, verbose: bool) -> None:
    """Will a model fit? Recommend GPU layers and the largest context, and show where memory goes."""
    from .memory_report import report

    Verbose.on = verbose
    report(_resolve_model(model), _parse_size_mb(vram) if vram else None, n_ctx, cache_type, n_seq_max, n_ubatch,
           n_gpu_layers, exact, as_json)


@main.command("info")
def info() -> None:
    """Show the llama.cpp build, its backends and the devices it sees."""
    from . import backends, llama_cpp_version, system_info

    click.echo(f"llamapy {__version__} on {llama_cpp_version()}")
    click.echo(system_info())
    for d in backends():
        click.echo(f"  [{d.index}] {d.name} ({d.type}): {d.description}, "
                   f"{d.memory_free / 2**30:.1f} / {d.memory_total / 2**30:.1f} GiB free")


if __name__ == "__main__":
    main()
