"""Audio in: what whisper.cpp takes is 16 kHz mono float32 samples; this module makes them.

WAV files (integer PCM of 8/16/24/32 bits, float32/float64, plain or "extensible") are
read with the standard library and numpy. Other formats (mp3, flac, ogg, ...) go through
``soundfile`` (the ``llamapy[audio]`` extra) or an ``ffmpeg`` program on the PATH. Any
sample rate is brought to 16 kHz by a band-limited (Kaiser-windowed sinc, polyphase)
resampler and any channel count is averaged to mono.
"""
from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 16000
MIN_SAMPLES = SAMPLE_RATE // 10  # whisper.cpp does not transcribe less than 100 ms

AudioSource = Union[str, "os.PathLike[str]", np.ndarray]

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_ZERO_CROSSINGS = 16  # half-width of the resampling filter, in zero crossings of its sinc
_ROLLOFF = 0.945  # filter cutoff, as a fraction of the lower Nyquist frequency
_KAISER_BETA = 8.6


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """16 kHz mono float32 samples from a file path or a numpy array.

    An array is taken as samples at ``sample_rate`` (default 16 kHz), shaped (n,) or
    (n, channels); integer arrays are scaled from their type's full range.
    """
    if isinstance(source, np.ndarray):
        samples, rate = source, sample_rate or SAMPLE_RATE
        if samples.ndim == 1:
            samples = samples[:, None]
        elif samples.ndim != 2:
            raise AudioError(f"audio arrays are (samples,) or (samples, channels); got shape {samples.shape}")
        samples = _to_float(samples)
        what = "the audio array"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        with open(path, "rb") as f:
            head = f.read(12)
        if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
            samples, rate = read_wav(path)
        else:
            samples, rate = _decode_with_library(path)
        what = str(path)
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{what} has samples that are not finite numbers")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return np.ascontiguousarray(resample(mono, rate, SAMPLE_RATE), dtype=np.float32)


def check_length(samples: np.ndarray, what: str = "the audio") -> None:
    """Refuse audio whisper.cpp cannot transcribe (empty, or under 100 ms) with a clear error."""
    if samples.size == 0:
        raise AudioError(f"{what} has no samples: nothing to transcribe")
    if samples.size < MIN_SAMPLES:
        raise AudioError(f"{what} is {1000 * samples.size / SAMPLE_RATE:.0f} ms long; "
                         f"whisper needs at least {1000 * MIN_SAMPLES // SAMPLE_RATE} ms of audio")


def _to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":
        return samples.astype(np.float32) / float(2 ** (8 * samples.dtype.itemsize - 1))
    if samples.dtype.kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        return (samples.astype(np.float32) - half) / half
    raise AudioError(f"audio arrays hold numbers; got dtype {samples.dtype}")


# -- WAV --------------------------------------------------------------------------------
def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Samples (frames, channels) as float32 in [-1, 1] and the sample rate of a WAV file."""
    path = Path(path)
    data = path.read_bytes()
    fmt: tuple[int, int, int, int] | None = None
    pcm: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # first bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            pcm = body  # a size past the end (streamed WAV) simply takes the rest of the file
            break
        pos += 8 + size + (size & 1)
    if fmt is None or pcm is None:
        raise AudioError(f"{path} is not a valid WAV file (no {'fmt' if fmt is None else 'data'} chunk)")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise AudioError(f"{path}: invalid WAV header ({channels} channels at {rate} Hz)")
    width = bits // 8
    if width < 1:
        raise AudioError(f"{path}: invalid WAV sample size ({bits} bits)")
    frames = len(pcm) // (width * channels)
    pcm = pcm[:frames * width * channels]
    if tag == _PCM and width == 1:
        samples = (np.frombuffer(pcm, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and width in (2, 4):
        samples = np.frombuffer(pcm, f"<i{width}").astype(np.float32) / float(2 ** (bits - 1))
    elif tag == _PCM and width == 3:
        b = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = (value - ((value & 0x800000) << 1)).astype(np.float32) / float(2 ** 23)
    elif tag == _FLOAT and width in (4, 8):
        samples = np.frombuffer(pcm, f"<f{width}").astype(np.float32)
    else:
        return _decode_with_library(path, f"WAV encoding {tag:#x} with {bits}-bit samples")
    return samples.reshape(frames, channels), rate


# -- other formats ----------------------------------------------------------------------
def _decode_with_library(path: Path, what: str | None = None) -> tuple[np.ndarray, int]:
    """mp3/flac/ogg/...: soundfile if installed, else ffmpeg if on the PATH, else a clear error."""
    what = what or f"{path.suffix.lstrip('.') or 'this'} audio"
    failures = []
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        try:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            return samples, int(rate)
        except Exception as e:  # soundfile raises its own error types for undecodable input
            failures.append(f"soundfile: {e}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is not None:
        proc = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
                               "-ar", str(SAMPLE_RATE), "-"], capture_output=True)
        if proc.returncode == 0:
            return np.frombuffer(proc.stdout, "<f4").reshape(-1, 1), SAMPLE_RATE
        failures.append("ffmpeg: " + (proc.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1])
    if failures:
        raise AudioError(f"{path} could not be decoded as audio ({'; '.join(failures)})")
    raise AudioError(f"{path} is not a WAV file, and reading {what} needs a decoder: "
                     f"install soundfile (pip install 'llamapy[audio]') or ffmpeg")


# -- resampling -------------------------------------------------------------------------
def resample(samples: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by the rational factor rate_out / rate_in.

    Each output sample is a Kaiser-windowed sinc interpolation of the input around its
    position; the filter's cutoff sits below the lower of the two Nyquist frequencies, so
    downsampling does not alias. The ``up`` distinct filter phases are computed once.
    """
    if rate_in == rate_out or samples.size == 0:
        return samples
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    cutoff = _ROLLOFF * min(1.0, up / down)  # relative to the input's Nyquist frequency
    half = math.ceil(_ZERO_CROSSINGS / cutoff)
    taps = np.arange(-half + 1, half + 1, dtype=np.float64)
    phases = np.arange(up, dtype=np.float64)[:, None] / up
    t = taps[None, :] - phases  # distance from the output position to each input tap
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, None))) / np.i0(_KAISER_BETA)
    bank = (cutoff * np.sinc(cutoff * t) * window).astype(np.float32)  # (up, 2 * half)

    n_out = (samples.size * up + down - 1) // down
    padded = np.concatenate([np.zeros(half, np.float32), samples.astype(np.float32, copy=False),
                             np.zeros(half + down + 1, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half)
    out = np.empty(n_out, np.float32)
    for r in range(min(up, n_out)):
        count = (n_out - r + up - 1) // up
        start = (r * down) // up + 1  # window of output k*up + r starts at its base + 1 in padded coordinates
        out[r::up] = windows[start:start + (count - 1) * down + 1:down] @ bank[(r * down) % up]
    return out
