"""`llamapy transcribe` (speech to text with whisper.cpp) and `llamapy convert whisper-ct2`."""
from __future__ import annotations

import os
import sys

import click

from .app import Verbose, fail_cleanly, main, resolve_model
from .convert import convert

DEFAULT_WHISPER_MODEL = "whisper-tiny.en"
FORMATS = ("txt", "srt", "vtt", "json")


def resolve_whisper_model(model: str | None):
    """-m value (a path, a catalog name, or a catalog name without 'whisper-'), else
    $LLAMAPY_WHISPER_MODEL, else the small English model from the catalog."""
    from ..hub.catalog import CATALOG

    name = model or os.environ.get("LLAMAPY_WHISPER_MODEL") or DEFAULT_WHISPER_MODEL
    if name not in CATALOG and f"whisper-{name}" in CATALOG:
        name = f"whisper-{name}"
    return resolve_model(name)


@main.command()
@click.argument("audio", type=click.Path(dir_okay=False))
@click.option("-m", "--model", help="whisper ggml file or catalog name [env LLAMAPY_WHISPER_MODEL; default: tiny.en]")
@click.option("-l", "--language", help="spoken language code, or 'auto' to detect it [default: en]")
@click.option("--translate", is_flag=True, help="translate the speech to English")
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="txt", show_default=True)
@click.option("--word-timestamps", is_flag=True, help="time each word (srt/vtt: one cue per word; json: words)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write here instead of stdout")
@click.option("--beam-size", type=int, help="beam search with this many beams (default: greedy)")
@click.option("--prompt", help="initial prompt (names, spelling, style)")
@click.option("--threads", type=int, help="CPU threads [default: up to 4]")
@click.option("-v", "--verbose", is_flag=True, help="show whisper.cpp's log and full tracebacks")
@fail_cleanly
def transcribe(audio: str, model: str | None, language: str | None, translate: bool, fmt: str,
               word_timestamps: bool, output: str | None, beam_size: int | None, prompt: str | None,
               threads: int | None, verbose: bool) -> None:
    """Transcribe speech in an audio file (WAV; mp3/flac/ogg with soundfile or ffmpeg)."""
    from ..whisper import WhisperContext, WhisperParams

    Verbose.on = verbose
    if verbose:
        from .. import set_verbose

        set_verbose(True)
    params = WhisperParams("beam_search" if beam_size and beam_size > 1 else "greedy", translate=translate,
                           token_timestamps=word_timestamps)
    if beam_size and beam_size > 1:
        params.beam_size = beam_size
    if language:
        params.language = language
    if prompt:
        params.initial_prompt = prompt
    if threads:
        params.n_threads = threads
    path = resolve_whisper_model(model)
    with WhisperContext(path) as ctx:
        if sys.stderr.isatty() and not verbose:
            with click.progressbar(length=100, label="transcribing", file=sys.stderr) as bar:
                params.progress_callback = lambda pct: bar.update(pct - bar.pos)
                result = ctx.transcribe(audio, params)
                bar.update(100 - bar.pos)
        else:
            result = ctx.transcribe(audio, params)
    text = {"txt": result.to_text, "json": result.to_json,
            "srt": lambda: result.to_srt(words=word_timestamps),
            "vtt": lambda: result.to_vtt(words=word_timestamps)}[fmt]()
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        click.echo(output, err=True)
    else:
        click.echo(text.rstrip("\n"))


@convert.command("whisper-ct2")
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--out-type", type=click.Choice(["auto", "f16", "f32"]), default="auto", show_default=True,
              help="matrices' type: auto keeps the source's exactly (whisper.cpp runs f16, not f32)")
@fail_cleanly
def whisper_ct2(src: str, dst: str, out_type: str) -> None:
    """Convert a CTranslate2 (faster-whisper) Whisper model folder to a whisper.cpp ggml file."""
    from ..convert.whisper_ct2 import convert_whisper_ct2

    click.echo(str(convert_whisper_ct2(src, dst, out_type)))
