"""`llamapy serve`: the OpenAI-compatible server."""
from __future__ import annotations

import ipaddress
from typing import Any

import click

from .app import Verbose, fail_cleanly, main, parse_split, resolve_model, rpc_option, tensor_split_option


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@main.command()
@click.option("-m", "--model", help="GGUF file or catalog name [env LLAMAPY_MODEL; default: a small model]")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback unless told)")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("-np", "--parallel", "n_parallel", type=int, default=8, show_default=True,
              help="requests generated at once (slots)")
@click.option("-c", "--ctx", "--ctx-size", "n_ctx", type=int, default=16384, show_default=True,
              help="context size shared by the slots")
@click.option("-b", "--batch", "n_batch", type=int, default=512, show_default=True, help="tokens per decode")
@click.option("-t", "--threads", "n_threads", type=int, help="CPU threads (default: all available)")
@click.option("-ngl", "--n-gpu-layers", type=int, help="layers to offload to the GPU")
@rpc_option
@tensor_split_option
@click.option("--api-key", envvar="LLAMAPY_API_KEY", help="require 'Authorization: Bearer KEY' [env LLAMAPY_API_KEY]")
@click.option("--alias", "model_alias", help="model name reported by /v1/models (default: the file name)")
@click.option("--chat-template", help="chat template (Jinja text or a llama.cpp built-in name) to use instead")
@click.option("--max-queue", type=int, default=64, show_default=True,
              help="requests that may wait for a slot before the server answers 503")
@click.option("--max-tokens-limit", type=int, help="refuse requests asking for more tokens (default: a slot's context)")
@click.option("--max-request-bytes", type=int, default=8 * 1024 * 1024, show_default=True)
@click.option("--shutdown-grace", "graceful_shutdown_s", type=float, default=10.0, show_default=True,
              help="seconds in-flight requests may run on after SIGTERM/Ctrl-C before they are cancelled")
@click.option("--embedding-model", help="GGUF embedding (or reranking) model or catalog name for /v1/embeddings "
                                        "(/v1/rerank)")
@click.option("--mmproj", type=click.Path(dir_okay=False), help="multimodal projector (mmproj GGUF): image parts "
                                                                 "in chat messages")
@click.option("--speculative", type=click.Choice(["ngram", "draft"]),
              help="ngram: each slot drafts tokens from its own prompt and reply; draft: --draft-model drafts "
                   "(same output, faster when the drafts hit)")
@click.option("--draft-model", help="smaller model with the same vocabulary that drafts tokens (file or catalog name)")
@click.option("--n-draft", type=click.IntRange(min=1), help="most tokens drafted per slot and step (default 16)")
@click.option("--temp", "--temperature", "temperature", type=float, default=0.8, show_default=True,
              help="default when a request has none")
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--min-p", type=float, default=0.05, show_default=True)
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="show llama.cpp's log and full tracebacks")
@fail_cleanly
def serve(model: str | None, verbose: bool, log_level: str, **o: Any) -> None:
    """Serve a model with OpenAI's API (chat, completions, models) on continuous batching."""
    from ..server import require_server_extra

    try:
        require_server_extra()
    except ImportError as e:
        raise click.ClickException(str(e)) from None
    from ..server.embedded import start_server

    Verbose.on = verbose
    if verbose:
        from .. import set_verbose

        set_verbose(True)
    if not _loopback(o["host"]) and not o["api_key"]:
        click.echo(f"warning: serving on {o['host']} without --api-key: anyone who can reach it can use it", err=True)
    path = resolve_model(model)
    split = parse_split(o.pop("tensor_split"))
    o["tensor_split"] = tuple(split) if split else None
    o["rpc_servers"] = o.pop("rpc")
    if o["embedding_model"]:
        o["embedding_model"] = resolve_model(o["embedding_model"])
    if o["draft_model"]:
        o["draft_model"] = resolve_model(o["draft_model"])
    click.echo(f"llamapy: serving {path.name} on http://{o['host']}:{o['port']}/v1 ({o['n_parallel']} slots)", err=True)
    start_server(path, log_level=log_level, **{k: v for k, v in o.items() if v is not None})
