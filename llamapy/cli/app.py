"""The ``llamapy`` command group and what its commands share: model resolution, sampling
options, one-line errors."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .. import __version__


class Verbose:
    on = False


def fail_cleanly(fn: Callable) -> Callable:
    """Turn user-facing errors into one line on stderr (a traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import LlamaError

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


def resolve_model(model: str | None) -> Path:
    """-m value (a path or a catalog name), else $LLAMAPY_MODEL, else the default catalog model."""
    from ..hub.catalog import CATALOG, DEFAULT_MODEL, cached_path, pull

    name = model or os.environ.get("LLAMAPY_MODEL") or DEFAULT_MODEL
    if name in CATALOG:
        path = cached_path(name)
        if path is None:
            click.echo(f"fetching {name} (first use) ...", err=True)
            path = pull(name)
        return path
    return Path(name).expanduser()


rpc_option = click.option(
    "--rpc", "rpc", metavar="HOST:PORT,...", envvar="LLAMAPY_RPC",
    help="RPC servers (`llamapy rpc-server`) to place layers on, comma-separated [env LLAMAPY_RPC]")
tensor_split_option = click.option(
    "-ts", "--tensor-split", metavar="A,B,...", help="share of the offloaded layers per device, remote ones first "
                                                     "(e.g. 1,1)")


def parse_split(text: str | None) -> list[float] | None:
    """'1,1,2' -> [1.0, 1.0, 2.0]."""
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}",
                                 param_hint="--tensor-split") from None


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
        rpc_option,
        tensor_split_option,
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


def setup(o: dict) -> None:
    Verbose.on = o["verbose"]
    if o["verbose"]:
        from .. import set_verbose

        set_verbose(True)


def load(o: dict, **extra: Any):
    from ..generation.llm import LLM

    return LLM(resolve_model(o["model"]), progress=sys.stderr.isatty(), rpc_servers=o.get("rpc") or None,
               tensor_split=parse_split(o.get("tensor_split")), **_settings(o), **extra)


@click.group()
@click.version_option(__version__, prog_name="llamapy")
def main() -> None:
    """Run local GGUF models with llama.cpp."""
