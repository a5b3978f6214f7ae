"""Values that answer to both spellings the reference APIs use: ``model.n_vocab`` and ``model.n_vocab()``."""
from __future__ import annotations


class CallableInt(int):
    """An int that also returns itself when called."""

    def __call__(self) -> int:
        return int(self)


class CallableBool:
    """A truth value that also returns itself when called (``if model.has_encoder`` and ``model.has_encoder()``)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = bool(value)

    def __bool__(self) -> bool:
        return self.value

    def __call__(self) -> bool:
        return self.value

    def __eq__(self, other: object) -> bool:
        return self.value == bool(other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return repr(self.value)
