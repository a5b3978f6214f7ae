"""`llamapy pull` and `llamapy models`: the model catalog and cache."""
from __future__ import annotations

import json

import click

from .app import fail_cleanly, main


@main.command()
@click.argument("name", required=False)
@click.option("--cache-dir", type=click.Path(file_okay=False), help="where hub downloads go (default: the model cache)")
@fail_cleanly
def pull(name: str | None, cache_dir: str | None) -> None:
    """Fetch a model: a catalog NAME, or user/repo[:tag] from the hub ($HF_ENDPOINT, $HF_TOKEN).

    Hub downloads show progress, resume after an interruption and are verified before use.
    """
    from ..hub.catalog import DEFAULT_MODEL, pull as do_pull
    from ..hub.download import download_model

    if name and "/" in name:
        path = download_model(hf_repo=name, cache_dir=cache_dir, progress=True)
    else:
        path = do_pull(name or DEFAULT_MODEL)
    click.echo(str(path))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json: bool) -> None:
    """List the catalog and which models are already cached."""
    from ..hub.catalog import CATALOG, cached_path, models_dir

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
