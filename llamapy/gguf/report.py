"""What ``llamapy gguf inspect`` and ``llamapy gguf set`` print and do."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from .file import GGUFError, GGUFFile, human_size, json_ready, summarise


def weight_mix(g: GGUFFile) -> list[tuple[str, int, float]]:
    """(type name, bytes, share of all tensor bytes), largest first."""
    by_type: dict[str, int] = defaultdict(int)
    for t in g.tensors:
        by_type[t.type_name] += t.n_bytes
    total = sum(by_type.values()) or 1
    return sorted(((k, v, v / total) for k, v in by_type.items()), key=lambda r: -r[1])


def summary(g: GGUFFile) -> list[tuple[str, str]]:
    """The headline facts of a model file, as (label, value) rows."""
    md = g.metadata
    arch = md.get("general.architecture", "?")
    tensors = g.tensors
    n_params = sum(t.n_elements for t in tensors)
    rows = [("file", f"{g.path} ({human_size(g.path.stat().st_size) if g.path else '-'})"),
            ("format", f"GGUF v{g.version}, alignment {g.alignment}, {len(md)} keys, {len(tensors)} tensors"),
            ("architecture", str(arch))]
    if "general.name" in md:
        rows.append(("name", str(md["general.name"])))
    if tensors:
        rows.append(("parameters", f"{n_params / 1e9:.2f} B" if n_params >= 1e9 else f"{n_params / 1e6:.1f} M"))
        mix = ", ".join(f"{name}: {share:.0%}" if share >= 0.005 else f"{name}: <1%"
                        for name, _, share in weight_mix(g))
        rows.append(("weights", f"{human_size(sum(t.n_bytes for t in tensors))} ({mix})"))
    for label, key in (("context", "context_length"), ("embedding", "embedding_length"), ("layers", "block_count"),
                       ("heads", "attention.head_count"), ("kv heads", "attention.head_count_kv")):
        if f"{arch}.{key}" in md:
            rows.append((label, str(json_ready(md[f"{arch}.{key}"]))))
    if "tokenizer.ggml.tokens" in md:
        rows.append(("vocab", f"{len(md['tokenizer.ggml.tokens'])} tokens ({md.get('tokenizer.ggml.model', '?')})"))
    template = md.get("tokenizer.chat_template")
    rows.append(("chat template", f"yes ({len(template)} chars)" if isinstance(template, str) else "no"))
    return rows


def inspect(path: str, tensors: bool, as_json: bool, key: str | None) -> None:
    with GGUFFile.open(path) as g:
        if key is not None:
            if key not in g:
                raise GGUFError(f"{path} has no key {key!r}")
            value = json_ready(g[key])
            click.echo(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            return
        if as_json:
            data = {
                "version": g.version, "alignment": g.alignment, "data_offset": g.data_offset,
                "metadata": {k: json_ready(v) for k, v in g.metadata.items()},
                "types": {k: g.type_of(k) for k in g.keys()},
                "tensors": [{"name": t.name, "type": t.type_name, "shape": list(t.shape), "n_bytes": t.n_bytes,
                             "offset": t.offset} for t in g.tensors],
            }
            click.echo(json.dumps(data, ensure_ascii=False))
            return
        rows = summary(g)
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            click.echo(f"{label:>{width}}  {value}")
        click.echo("\nmetadata:")
        for k, v in g.metadata.items():
            click.echo(f"  {k} ({g.type_of(k)}) = {summarise(v)}")
        if tensors:
            click.echo(f"\ntensors ({len(g.tensors)}):")
            name_w = max((len(t.name) for t in g.tensors), default=4)
            for t in g.tensors:
                shape = " x ".join(str(d) for d in t.shape)
                click.echo(f"  {t.name:<{name_w}}  {t.type_name:<6} {shape:<18} {human_size(t.n_bytes):>11}")


def _parse(value: str, type_: str | None) -> Any:
    if type_ == "str":
        return value
    if type_ == "bool" or (type_ is None and value.lower() in ("true", "false")):
        if value.lower() not in ("true", "false", "1", "0"):
            raise GGUFError(f"not a boolean: {value!r}")
        return value.lower() in ("true", "1")
    if type_ and type_.startswith("arr[") or value.startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise GGUFError(f"an array value must be JSON, e.g. [1, 2]: {e}") from None
    if type_ in ("f32", "f64"):
        return float(value)
    if type_ is not None:
        try:
            return int(value, 0)
        except ValueError:
            raise GGUFError(f"not an integer for {type_}: {value!r}") from None
    for conv in (lambda v: int(v, 0), float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def set_value(path: str, key: str, value: str, output: str, type_: str | None) -> None:
    if Path(output).expanduser().resolve() == Path(path).expanduser().resolve():
        raise GGUFError("write the edited file to a new path (-o): the original is read while writing")
    with GGUFFile.open(path) as g:
        current = g.type_of(key) if key in g else None
        g.set(key, _parse(value, type_ or current), type_)
        g.write(output)
    click.echo(output)
