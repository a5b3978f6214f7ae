"""Errors of the speech-to-text feature (part of llamapy's one hierarchy)."""
from __future__ import annotations

from ..errors import LlamaError


class WhisperError(LlamaError):
    """whisper.cpp failed, or was asked for something the model cannot do."""


class AudioError(WhisperError, ValueError):
    """Audio could not be read or decoded, or is too short to transcribe."""


class TranscriptionAborted(WhisperError):
    """A transcription was stopped by cancel() or an abort callback; the context stays usable."""
