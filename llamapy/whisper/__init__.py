"""Speech to text with whisper.cpp: load a ggml whisper model, transcribe audio files or arrays.

    from llamapy.whisper import WhisperContext, WhisperParams
    params = WhisperParams(language="en", n_threads=4)
    ctx = WhisperContext("ggml-tiny.en.bin")
    result = ctx.transcribe("audio.wav", params)
    for seg in result.segments:
        print(seg.start, seg.end, seg.text)
"""
from .audio import SAMPLE_RATE, load_audio, read_wav, resample
from .context import WhisperContext, language_code, language_name
from .errors import AudioError, TranscriptionAborted, WhisperError
from .params import SamplingStrategy, WhisperParams
from .result import Segment, Token, TranscriptionResult, Word

__all__ = [
    "WhisperContext", "WhisperParams", "SamplingStrategy",
    "TranscriptionResult", "Segment", "Token", "Word",
    "WhisperError", "AudioError", "TranscriptionAborted",
    "load_audio", "read_wav", "resample", "SAMPLE_RATE", "language_code", "language_name",
]
