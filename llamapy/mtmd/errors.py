"""Errors of the multimodal feature (part of llamapy's one hierarchy)."""
from __future__ import annotations

from ..errors import LlamaError


class MtmdError(LlamaError):
    """libmtmd failed, or was asked for something the loaded projector cannot do."""


class ProjectorError(MtmdError):
    """A projector (mmproj) file could not be loaded, or does not fit the text model."""


class MediaError(MtmdError, ValueError):
    """An image or audio input could not be read, decoded or tokenized."""


class NoProjectorError(MtmdError, ValueError):
    """Media was given but no projector is loaded."""
