"""
Two per-connection costs of Autobahn that a relay holding ten thousand sockets
cannot afford, and what we do about them.

1. Every new connection copies the factory's ~40 protocol options into the
   protocol instance's ``__dict__`` (only those the class does not already
   have).  Giving each factory a protocol subclass that carries the options as
   class attributes skips the copy: the options are shared, not repeated in
   every connection's memory.
2. Every new connection pretty-prints that option list for a debug log line,
   eagerly, whether debug logging is on or not (``pformat`` of ~40 tuples,
   about a tenth of a handshake's CPU).  ``defer_debug_pformat`` makes the
   module's ``pformat`` lazy: the text is only built if the line is emitted,
   so debug output is unchanged.
"""

from __future__ import annotations

from pprint import pformat
from types import FunctionType
from typing import Any

import autobahn.websocket.protocol as _protocol_module


class _LazyPformat:
    """Formats its value with ``pformat`` only when turned into text."""

    __slots__ = ("_value",)

    def __init__(self, value: Any, *args: Any, **kwargs: Any) -> None:
        self._value = value

    def __str__(self) -> str:
        return pformat(self._value)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def defer_debug_pformat() -> None:
    """Make Autobahn's protocol module pretty-print only for emitted lines."""
    _protocol_module.pformat = _LazyPformat


def with_options(protocol: type, factory: Any) -> type:
    """
    A subclass of ``protocol`` with ``factory``'s current protocol options as
    class attributes, so instances do not copy them (see the module doc).
    """
    attributes = {name: _as_class_attribute(getattr(factory, name))
                  for name in protocol.CONFIG_ATTRS}
    attributes["__module__"] = protocol.__module__
    return type(protocol.__name__, (protocol,), attributes)


def _as_class_attribute(value: Any) -> Any:
    # A function stored on a class would turn into a method and receive the
    # protocol as its first argument (perMessageCompressionAccept is one).
    if isinstance(value, FunctionType):
        return staticmethod(value)
    return value
