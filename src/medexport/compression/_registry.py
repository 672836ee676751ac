"""The registry of compression passes: ``@register_pass("svd")`` on a class, ``get_pass("svd")`` to build one.

CLI choices and the parametrized tests both come from :func:`list_passes`, so a new pass is wired
into ``medexport compress --method`` and tested on every reference network by registering it.
"""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Callable

from medexport.errors import InputError

if TYPE_CHECKING:
    from medexport.compression.base import CompressionPass

_PASSES: dict[str, type["CompressionPass"]] = {}


def register_pass(name: str) -> Callable[[type["CompressionPass"]], type["CompressionPass"]]:
    """Class decorator: make the pass available as ``name`` (a second class under one name is an error)."""

    def decorate(cls: type["CompressionPass"]) -> type["CompressionPass"]:
        if name in _PASSES and _PASSES[name] is not cls:
            raise InputError(f"a different compression pass is already registered as {name!r}")
        cls.name = name
        _PASSES[name] = cls
        return cls

    return decorate


def get_pass(name: str) -> "CompressionPass":
    """A new instance of the pass registered as ``name``; an unknown name lists the known ones."""
    try:
        return _PASSES[name]()
    except KeyError:
        known = ", ".join(sorted(_PASSES)) or "none"
        raise InputError(f"unknown compression method {name!r}; known methods: {known}") from None


def list_passes(pattern: str = "*", family: str | None = None) -> list[str]:
    """Sorted names of registered passes matching the shell-style ``pattern`` (and ``family``, if given)."""
    return sorted(n for n, cls in _PASSES.items()
                  if fnmatch.fnmatchcase(n, pattern) and family in (None, cls.family))
