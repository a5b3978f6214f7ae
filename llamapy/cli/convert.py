"""`llamapy convert ...`: the group the converters' commands register on."""
from __future__ import annotations

from .app import main


@main.group()
def convert() -> None:
    """Convert models from other formats (Hugging Face, CTranslate2) to GGUF / ggml."""
