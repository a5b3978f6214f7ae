"""`llamapy gguf inspect|set|remove`."""
from __future__ import annotations


import click

from .app import fail_cleanly, main


@main.group()
def gguf() -> None:
    """Read and edit GGUF files."""


@gguf.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--tensors", is_flag=True, help="list every tensor: name, type, shape, size")
@click.option("--json", "as_json", is_flag=True, help="everything, machine-readable")
@click.option("--key", help="print one metadata value in full")
@fail_cleanly
def gguf_inspect(path: str, tensors: bool, as_json: bool, key: str | None) -> None:
    """Summarise a GGUF file (metadata and tensor infos; tensor data is never read)."""
    from ..gguf.report import inspect

    inspect(path, tensors=tensors, as_json=as_json, key=key)


@gguf.command("set")
@click.argument("path", type=click.Path())
@click.argument("key")
@click.argument("value")
@click.option("-o", "--output", required=True, type=click.Path(), help="where to write the edited file")
@click.option("--type", "type_", help="GGUF type (u32, i64, f32, bool, str, ...); default: the key's current type")
@fail_cleanly
def gguf_set(path: str, key: str, value: str, output: str, type_: str | None) -> None:
    """Write a copy of PATH with KEY set to VALUE."""
    from ..gguf.report import set_value

    set_value(path, key, value, output, type_)


@gguf.command("remove")
@click.argument("path", type=click.Path())
@click.argument("key")
@click.option("-o", "--output", required=True, type=click.Path(), help="where to write the edited file")
@fail_cleanly
def gguf_remove(path: str, key: str, output: str) -> None:
    """Write a copy of PATH without KEY."""
    from ..gguf.file import GGUFFile

    with GGUFFile.open(path) as g:
        if key not in g:
            raise ValueError(f"{path} has no key {key!r}")
        g.remove(key).write(output)
    click.echo(output)
