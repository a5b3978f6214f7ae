"""Calls whose arguments are written one per tag (Qwen3-Coder, GLM 4.x): each value is JSON
when it reads as JSON (numbers, objects, lists, booleans), else the raw text is the string."""
from __future__ import annotations

import json
from typing import Any


def xml_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if not isinstance(value, str) else text


__all__ = ["xml_value"]
