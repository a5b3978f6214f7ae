"""Media in prompts: sources (paths, URLs, bytes, arrays, PIL images, OpenAI content parts)
turned into bitmaps, and chat messages with content parts turned into template-ready text
with media markers."""
from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import unquote, urlparse

from .bitmap import Bitmap
from .errors import MediaError

if TYPE_CHECKING:
    from .context import MtmdContext

# OpenAI-style content part types that carry media (and the key holding it).
MEDIA_PARTS = {"image_url": "image_url", "input_image": "image_url", "image": "image",
               "input_audio": "input_audio", "audio": "audio"}


def _decode_data_url(url: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise MediaError("a data: URL needs a comma before its payload (data:image/png;base64,...)")
    try:
        if head.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return unquote(payload).encode("latin-1")
    except (binascii.Error, ValueError) as e:
        raise MediaError(f"the data: URL's base64 payload does not decode: {e}") from None


def _from_url_or_path(mctx: MtmdContext, text: str) -> Bitmap:
    if text.startswith("data:"):
        return Bitmap.from_bytes(mctx, _decode_data_url(text))
    if text.startswith("file:"):
        u = urlparse(text)
        if u.netloc not in ("", "localhost"):
            raise MediaError(f"file URLs must name a local file (file:///path): {text}")
        return Bitmap.from_file(mctx, unquote(u.path))
    if text.startswith(("http://", "https://")):
        raise MediaError("remote URLs are not fetched: download the media and pass its path, bytes or a data: URL")
    return Bitmap.from_file(mctx, text)


def load_media(mctx: MtmdContext, source: Any) -> Bitmap:
    """A bitmap from any supported source.

    ``source``: a :class:`Bitmap`; a path; a ``file://`` or ``data:`` URL; the bytes of a file
    (JPEG, PNG, BMP, GIF, ... or WAV/MP3/FLAC); a numpy H x W x 3 array; a PIL image; or an
    OpenAI content part (``{"type": "image_url", "image_url": {"url": ...}}``,
    ``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}``).
    """
    if isinstance(source, Bitmap):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Bitmap.from_bytes(mctx, source)
    if isinstance(source, (str, os.PathLike)):
        return _from_url_or_path(mctx, os.fspath(source))
    if isinstance(source, Mapping):
        kind = source.get("type")
        key = MEDIA_PARTS.get(str(kind))
        if key is None:
            raise MediaError(f"not a media content part: type {kind!r} (expected one of {', '.join(MEDIA_PARTS)})")
        value = source.get(key)
        if kind in ("input_audio", "audio") and isinstance(value, Mapping) and "data" in value:
            try:
                data = base64.b64decode(value["data"])
            except (binascii.Error, ValueError, TypeError) as e:
                raise MediaError(f"the audio part's base64 data does not decode: {e}") from None
            return Bitmap.from_bytes(mctx, data)
        if isinstance(value, Mapping):
            value = value.get("url", value.get("data"))
        if value is None:
            raise MediaError(f"the {kind} part has no {key} (expected {{'{key}': {{'url': ...}}}})")
        return load_media(mctx, value)
    if hasattr(source, "__array_interface__") or hasattr(source, "__array__"):
        if hasattr(source, "convert") and hasattr(source, "mode"):  # a PIL image
            return Bitmap.from_pil(source)
        return Bitmap.from_array(source)
    raise MediaError(f"cannot use a {type(source).__name__} as media: give a path, URL, bytes, "
                     f"numpy array, PIL image or content part")


def is_media_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") in MEDIA_PARTS


def has_media(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message's content holds a media part."""
    return any(isinstance(m.get("content"), (list, tuple)) and any(is_media_part(p) for p in m["content"])
               for m in messages if isinstance(m, Mapping))


def flatten_messages(messages: Sequence[Mapping[str, Any]], marker: str) -> tuple[list[dict], list[Any]]:
    """Messages whose content-part lists become text, each media part a ``marker``; and the
    media parts in prompt order.

    Text parts are joined with newlines, with none next to a media marker (as llama.cpp's
    server joins them). Messages with string content pass through unchanged.
    """
    out: list[dict] = []
    media: list[Any] = []
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        if not isinstance(content, (list, tuple)):
            out.append(dict(m) if isinstance(m, Mapping) else m)
            continue
        text, last_marker = "", False
        for part in content:
            if isinstance(part, str):
                part = {"type": "text", "text": part}
            if is_media_part(part):
                text += marker
                last_marker = True
                media.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                if text and not last_marker:
                    text += "\n"
                text += str(part.get("text", ""))
                last_marker = False
            else:
                raise MediaError(f"unknown content part {part!r}: use {{'type': 'text', 'text': ...}} or a media "
                                 f"part ({', '.join(MEDIA_PARTS)})")
        out.append({**m, "content": text})
    return out, media


__all__ = ["load_media", "flatten_messages", "has_media", "is_media_part", "MEDIA_PARTS"]
