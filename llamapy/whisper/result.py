"""What a transcription returns: segments (seconds), tokens with probabilities, words, and the
text, SRT, WebVTT and JSON renderings of it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Token:
    """One decoded token. ``start``/``end`` (seconds) are set when token timestamps were asked."""

    id: int
    text: str
    p: float
    plog: float
    start: float | None = None
    end: float | None = None
    special: bool = False


@dataclass(frozen=True)
class Word:
    """A word (its tokens up to the next one that starts with a space), with times and the
    lowest probability among its tokens."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: times in seconds from the start of the audio, and its text."""

    index: int
    start: float
    end: float
    text: str
    tokens: tuple[Token, ...] = ()
    words: tuple[Word, ...] = ()
    no_speech_prob: float = 0.0
    speaker_turn_next: bool = False


@dataclass
class TranscriptionResult:
    """All segments of a transcription, the language, and the audio's duration (seconds)."""

    segments: list[Segment]
    language: str
    duration: float
    params: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    def to_text(self) -> str:
        """One line per segment."""
        return "".join(s.text.strip() + "\n" for s in self.segments)

    def to_srt(self, words: bool = False) -> str:
        """SubRip subtitles: one cue per segment (or per word with ``words=True``)."""
        return "\n".join(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n"
                         for i, (a, b, text) in enumerate(self._cues(words), 1))

    def to_vtt(self, words: bool = False) -> str:
        """WebVTT subtitles: one cue per segment (or per word with ``words=True``)."""
        return "WEBVTT\n\n" + "\n".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n"
                                        for a, b, text in self._cues(words))

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.language, "duration": self.duration, "text": self.text,
                "segments": [asdict(s) for s in self.segments]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def _cues(self, words: bool) -> list[tuple[float, float, str]]:
        if words:
            return [(w.start, w.end, w.text.strip()) for s in self.segments for w in s.words if w.text.strip()]
        return [(s.start, s.end, s.text.strip()) for s in self.segments if s.text.strip()]


def _clock(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def group_words(tokens: tuple[Token, ...], raw: list[bytes]) -> tuple[Word, ...]:
    """Words from timed text tokens (``raw`` holds their bytes, so a character split between
    tokens comes out whole): a token starting with a space begins a new word."""
    words: list[Word] = []
    parts: list[tuple[Token, bytes]] = []

    def flush() -> None:
        if parts and parts[0][0].start is not None:
            first, last = parts[0][0], parts[-1][0]
            text = b"".join(b for _, b in parts).decode("utf-8", "replace")
            words.append(Word(text, first.start, last.end if last.end is not None else first.start,
                              min(t.p for t, _ in parts)))
        parts.clear()

    for token, data in zip(tokens, raw):
        if token.special:
            continue
        if data.startswith(b" ") and parts:
            flush()
        parts.append((token, data))
    flush()
    return tuple(words)
