"""
Per-connection and per-frame costs of Autobahn that a relay holding ten
thousand sockets cannot afford, and what we do about them.

1. Every new connection copies the factory's ~40 protocol options into the
   protocol instance's ``__dict__`` (only those the class does not already
   have).  Giving each factory a protocol subclass that carries the options as
   class attributes skips the copy: the options are shared, not repeated in
   every connection's memory.
2. Every new connection pretty-prints that option list for a debug log line,
   eagerly, whether debug logging is on or not (``pformat`` of ~40 tuples,
   about a tenth of a handshake's CPU).
3. Every frame read and every frame sent logs a debug line whose arguments
   are coloured eagerly (``hltype``/``hlval`` walk ``click.style``): about
   3% of a relayed round trip's CPU, for lines nobody reads.

``defer_debug_formatting`` makes those helpers lazy in the two Autobahn
modules that call them on every connection and frame: the text is only built
if the line is emitted, so debug output is unchanged.
"""

from __future__ import annotations

from pprint import pformat
from types import FunctionType
from typing import Any, Callable

import autobahn.twisted.websocket as _twisted_module
import autobahn.websocket.protocol as _protocol_module
from autobahn.util import hltype, hlval


class _Lazy:
    """Calls ``render(*args, **kwargs)`` only when turned into text."""

    __slots__ = ("_render", "_args", "_kwargs")

    def __init__(self, render: Callable[..., str], args: tuple, kwargs: dict) -> None:
        self._render = render
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        return self._render(*self._args, **self._kwargs)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazy(render: Callable[..., str]) -> Callable[..., _Lazy]:
    def deferred(*args: Any, **kwargs: Any) -> _Lazy:
        return _Lazy(render, args, kwargs)

    deferred.__name__ = render.__name__
    return deferred


def defer_debug_formatting() -> None:
    """Make Autobahn format its debug-line arguments only for emitted lines."""
    _protocol_module.pformat = _lazy(pformat)
    for module in (_protocol_module, _twisted_module):
        module.hltype = _lazy(hltype)
        module.hlval = _lazy(hlval)


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
