"""`llamapy rpc-server`: expose this machine's devices to llamapy/llama.cpp clients over ggml's RPC."""
from __future__ import annotations

import os
import sys

import click

from .app import Verbose, fail_cleanly, main

_PUBLIC_WARNING = """\
!!! WARNING: llamapy rpc-server is listening on {host}, not on loopback.
!!! ggml's RPC protocol has no authentication and no encryption: anyone who can
!!! reach {host}:{port} can run computations on this machine and read or write
!!! the memory the server allocates. Use it only on a trusted, isolated network."""


@main.command("rpc-server")
@click.option("-H", "--host", default="127.0.0.1", show_default=True,
              help="address to listen on (anything but loopback needs --allow-public)")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=50052, show_default=True)
@click.option("-d", "--device", "device", help="comma-separated devices to serve, e.g. CUDA0 or CPU "
                                               "(default: the accelerators, else the CPU; see `llamapy info`)")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="CPU threads (default: half the cores)")
@click.option("-c", "--cache", "cache_dir", type=click.Path(file_okay=False),
              help="directory caching large tensors, so a client reloading a model sends hashes, not data")
@click.option("--allow-public", is_flag=True, help="allow a non-loopback --host (the protocol has no authentication)")
@click.option("-v", "--verbose", is_flag=True, help="show ggml's log and full tracebacks")
@fail_cleanly
def rpc_server(host: str, port: int, device: str | None, threads: int | None, cache_dir: str | None,
               allow_public: bool, verbose: bool) -> None:
    """Serve this machine's devices to clients that load models with --rpc HOST:PORT.

    Runs until Ctrl-C or SIGTERM. It serves one client at a time.
    """
    from .. import rpc

    Verbose.on = verbose
    if verbose:
        from .. import set_verbose

        set_verbose(True)
    if not rpc.is_loopback(host):
        if not allow_public:
            raise click.ClickException(
                f"refusing to listen on {host}: the RPC protocol has no authentication, so anyone who can reach "
                f"the port can use this machine. Listen on 127.0.0.1 (and tunnel, e.g. ssh -L), or pass "
                f"--allow-public on a trusted network only.")
        click.secho(_PUBLIC_WARNING.format(host=host, port=port), fg="red", bold=True, err=True)
    devices = [d.strip() for d in device.split(",") if d.strip()] if device else None

    def ready(endpoint: str, names: list[str]) -> None:
        click.echo(f"llamapy rpc-server: listening on {endpoint} (pid {os.getpid()}), serving "
                   f"{', '.join(names)}; Ctrl-C or SIGTERM stops it", err=True)

    status = rpc.serve(host, port, devices, threads, cache_dir, allow_public=allow_public, on_ready=ready)
    click.echo("llamapy rpc-server: stopped" if status == 0 else "llamapy rpc-server: the server failed", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
