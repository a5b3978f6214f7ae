"""The ``llamapy`` command line."""
from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="llamapy")
def main() -> None:
    """Run local GGUF models with llama.cpp."""


@main.command("info")
def info() -> None:
    """Show the llama.cpp build, its backends and the devices it sees."""
    from . import backends, llama_cpp_version, system_info

    click.echo(f"llamapy {__version__} on {llama_cpp_version()}")
    click.echo(system_info())
    for d in backends():
        click.echo(f"  [{d.index}] {d.name} ({d.type}): {d.description}, "
                   f"{d.memory_free / 2**30:.1f} / {d.memory_total / 2**30:.1f} GiB free")
