"""`llamapy embed` and `llamapy convert hf`."""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import IO, Iterator

import click

from .app import Verbose, fail_cleanly, main, resolve_model
from .convert import convert

DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"
PROGRESS_MIN = 2000  # texts from which a terminal gets a progress bar
CHUNK = 1024  # texts per step: the progress bar moves this often


def _lines(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\r\n")


def _file_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from _lines(f)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


@main.command()
@click.argument("texts", nargs=-1)
@click.option("-m", "--model", help=f"GGUF file or catalog name [env LLAMAPY_EMBED_MODEL; default: {DEFAULT_EMBED_MODEL}]")
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="read the texts from a file, one per line ('-': stdin)")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of {index, embedding, n_tokens, truncated}")
@click.option("--pooling", type=click.Choice(["mean", "cls", "last"]), help="override the model's pooling")
@click.option("--no-normalize", is_flag=True, help="raw vectors instead of L2-normalised ones")
@click.option("--no-truncate", is_flag=True, help="fail on a text longer than a sequence instead of cutting it")
@click.option("-b", "--batch-size", "n_batch", type=int,
              help="tokens per decode (default: the model's training context, at most 2048)")
@click.option("--threads", type=int, help="CPU threads (default: all available)")
@click.option("-ngl", "--n-gpu-layers", type=int, help="layers to offload to the GPU")
@click.option("-v", "--verbose", is_flag=True, help="show llama.cpp's log and full tracebacks")
@fail_cleanly
def embed(texts: tuple[str, ...], model: str | None, path: str | None, as_json: bool, pooling: str | None,
          no_normalize: bool, no_truncate: bool, n_batch: int | None, threads: int | None, n_gpu_layers: int | None,
          verbose: bool) -> None:
    """Embed TEXTS (or the lines of --file / stdin): one vector per line on stdout, or --json."""
    from ..embed import Embedder, TruncationWarning

    Verbose.on = verbose
    if verbose:
        from .. import set_verbose

        set_verbose(True)
    source, total = _source(texts, path)
    name = model or os.environ.get("LLAMAPY_EMBED_MODEL") or DEFAULT_EMBED_MODEL
    with Embedder(resolve_model(name), pooling=pooling, normalize=not no_normalize, truncate=not no_truncate,
                  n_batch=n_batch, n_threads=threads, n_gpu_layers=n_gpu_layers) as emb, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        show = sys.stderr.isatty() and total is not None and total >= PROGRESS_MIN
        with click.progressbar(length=total or 0, label="embedding", file=sys.stderr) if show else _NoBar() as bar:
            n_cut = _write(emb.embed_iter(source, CHUNK, info=True), as_json, bar)
    if n_cut:
        click.echo(f"{n_cut} text(s) were longer than {emb.max_tokens} tokens and were cut", err=True)


def _source(texts: tuple[str, ...], path: str | None) -> tuple[Iterator[str] | tuple[str, ...], int | None]:
    """The texts and their number when known cheaply."""
    if texts and path:
        raise click.UsageError("give texts as arguments or --file, not both")
    if texts:
        return texts, len(texts)
    if path is None or path == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give texts as arguments, --file, or pipe them on stdin (one per line)")
        return _lines(sys.stdin), None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file not found: {p}")
    return _file_lines(p), _count_lines(p)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def _write(chunks, as_json: bool, bar) -> int:
    """Print the vectors as they come; return how many texts were cut."""
    out = sys.stdout
    index = n_cut = 0
    if as_json:
        out.write("[")
    for chunk in chunks:
        for vec, n_tokens, cut in zip(chunk.vectors, chunk.n_tokens, chunk.truncated):
            if as_json:
                item = {"index": index, "embedding": [round(float(x), 7) for x in vec],
                        "n_tokens": int(n_tokens), "truncated": bool(cut)}
                out.write(("," if index else "") + "\n" + json.dumps(item))
            else:
                out.write(" ".join(f"{x:.7g}" for x in vec) + "\n")
            index += 1
        n_cut += int(chunk.truncated.sum())
        bar.update(len(chunk.vectors))
        out.flush()
    if as_json:
        out.write("\n]\n")
    return n_cut


@convert.command("hf")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--type", "out_type", type=click.Choice(["f32", "f16", "q8_0"]), default="f16", show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "cls", "last"]),
              help="override the sentence-transformers pooling (encoders only)")
@click.option("--name", help="general.name in the GGUF (default: the folder's name)")
@fail_cleanly
def convert_hf(src: str, dst: str, out_type: str, pooling: str | None, name: str | None) -> None:
    """Convert a BERT-family Hugging Face / sentence-transformers folder SRC to a GGUF file DST."""
    from ..convert.bert import convert_bert

    click.echo(str(convert_bert(src, dst, out_type, pooling, name)))
