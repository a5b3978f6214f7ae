"""Ownership of C pointers.

A :class:`Handle` owns one C pointer and frees it exactly once, when the last Python
reference to the handle goes away. Handles reference the handles of their parents (a
context's handle references its model's), so a parent is always freed after its
children, whatever order the user closes or drops things in. A :class:`CObject` (Model,
Context, ...) holds its handle; ``close()`` drops that reference, and the pointer is
freed at once unless something still depends on it (a context on its model, a numpy
view on a context's buffers), in which case it is freed when that goes too.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import ClosedError


class Handle:
    """One owned C pointer, its free function and the handles it depends on."""

    __slots__ = ("ptr", "_free", "parents", "__weakref__")

    def __init__(self, ptr: Any, free: Callable[[Any], None] | None, parents: tuple[Any, ...] = ()):
        self.ptr = ptr
        self._free = free
        self.parents = parents

    def release(self) -> Any:
        """Give up ownership (the pointer now belongs to someone else) and return it."""
        ptr, self.ptr, self._free = self.ptr, None, None
        return ptr

    def __del__(self) -> None:
        if self.ptr is not None and self._free is not None:
            self._free(self.ptr)
        self.ptr = None


class CObject:
    """Base of the wrappers: ``close()`` is idempotent, ``with`` works, use-after-close raises."""

    _handle: Handle | None = None

    def _own(self, ptr: Any, free: Callable[[Any], None] | None, *parents: CObject, keep: tuple = ()) -> None:
        """Take ownership of ``ptr``; ``parents`` (and the ``keep`` objects, e.g. C buffers
        the pointer refers to) stay alive until it is freed."""
        self._handle = Handle(ptr, free, tuple(p._h for p in parents) + keep)

    @property
    def _h(self) -> Handle:
        h = self._handle
        if h is None:
            raise ClosedError(f"this {type(self).__name__} is closed")
        return h

    @property
    def _ptr(self) -> Any:
        h = self._handle
        if h is None:
            raise ClosedError(f"this {type(self).__name__} is closed")
        return h.ptr

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Free the C object now (or as soon as nothing depends on it). Safe to call twice."""
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
