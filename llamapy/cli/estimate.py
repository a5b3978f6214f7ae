"""`llamapy estimate` and `llamapy info`: memory planning and the build's devices."""
from __future__ import annotations

import re

import click

from .. import __version__
from .app import Verbose, fail_cleanly, main, resolve_model, rpc_option


def _parse_size_mb(text: str) -> list[float]:
    """'8GiB,24GB,512' -> MiB per device (a bare number is MiB)."""
    units = {"": 1, "mib": 1, "mb": 1e6 / 2**20, "m": 1, "gib": 1024, "gb": 1e9 / 2**20, "g": 1024,
             "tib": 1024**2, "tb": 1e12 / 2**20, "kib": 1 / 1024}
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", part)
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
@rpc_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-v", "--verbose", is_flag=True)
@fail_cleanly
def estimate(model: str | None, vram: str | None, n_ctx: int | None, cache_type: str, n_seq_max: int,
             n_ubatch: int, n_gpu_layers: int | None, exact: bool, rpc: str | None, as_json: bool,
             verbose: bool) -> None:
    """Will a model fit? Recommend GPU layers and the largest context, and show where memory goes.

    With --rpc the plan spans the RPC servers' devices too, with the memory each reports.
    """
    from ..memory.report import report

    Verbose.on = verbose
    if rpc:
        from ..rpc import add_servers

        add_servers(rpc)
    report(resolve_model(model), _parse_size_mb(vram) if vram else None, n_ctx, cache_type, n_seq_max, n_ubatch,
           n_gpu_layers, exact, as_json)


@main.command("info")
@rpc_option
@fail_cleanly
def info(rpc: str | None) -> None:
    """Show the llama.cpp build, its backends and the devices it sees (with --rpc, remote ones too)."""
    from .. import backends, llama_cpp_version, system_info

    if rpc:
        from ..rpc import add_servers

        add_servers(rpc)

    click.echo(f"llamapy {__version__} on {llama_cpp_version()}")
    click.echo(system_info())
    for d in backends():
        where = ", remote" if d.endpoint else ""
        click.echo(f"  [{d.index}] {d.name} ({d.type}{where}): {d.description}, "
                   f"{d.memory_free / 2**30:.1f} / {d.memory_total / 2**30:.1f} GiB free")
