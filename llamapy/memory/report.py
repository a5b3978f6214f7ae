"""What ``llamapy estimate`` prints."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .estimate import MiB, MemoryEstimate, estimate_gpu_layers, estimate_memory_usage


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def _rows(e: MemoryEstimate, mark: str) -> list[list[str]]:
    rows = []
    for d in [*e.devices, e.host]:
        rows.append([mark if d is e.host or d is e.devices[0] else "", str(e.n_gpu_layers), d.name,
                     _mib(d.weights), _mib(d.kv), _mib(d.compute), _mib(d.total)])
        mark = ""
    return rows


def _table(rows: list[list[str]]) -> None:
    head = ["", "layers", "device", "weights", "KV cache", "compute", "total"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        click.echo("  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def report(model: Path, vram_mb: list[float] | None, n_ctx: int | None, cache_type: str, n_seq_max: int,
           n_ubatch: int, n_gpu_layers: int | None, exact: bool, as_json: bool) -> None:
    settings = dict(cache_type_k=cache_type, n_seq_max=n_seq_max, n_ubatch=n_ubatch)
    if exact:
        e = estimate_memory_usage(model, n_ctx, n_gpu_layers=n_gpu_layers or 0, exact=True, **settings)
        if as_json:
            click.echo(json.dumps(e.as_dict()))
            return
        click.echo(f"{model.name}: llama.cpp's own sizes for n_ctx={e.n_ctx}, {e.n_gpu_layers} GPU layers")
        _table(_rows(e, "*"))
        return
    r = estimate_gpu_layers(model, vram_mb, n_ctx, **settings)
    chosen = r.estimate
    if as_json:
        click.echo(json.dumps({"recommended": chosen.as_dict(), "max_ctx": r.max_ctx, "budget": r.budget,
                               "neighbours": [n.as_dict() for n in r.neighbours]}))
        return
    gpus = ", ".join(d.name for d in chosen.devices) or "no GPU (host only)"
    click.echo(f"{model.name}: context {chosen.n_ctx}, KV cache {cache_type}, {n_seq_max} sequence(s); {gpus}")
    rows: list[list[str]] = []
    for e in sorted([chosen, *r.neighbours], key=lambda x: x.n_gpu_layers):
        rows += _rows(e, "*" if e is chosen else "")
    _table(rows)
    click.echo(f"\nrecommended: -ngl {r.n_gpu_layers} (marked *); largest context that fits: {r.max_ctx}")
