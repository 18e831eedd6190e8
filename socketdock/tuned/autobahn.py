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

4. Every masked client frame gets a new NVX (cffi) masker: ~2.8 µs to set up
   before ~1 µs of work, about 2.5% of a relayed round trip for a small
   message.

``defer_debug_formatting`` makes those helpers lazy in the two Autobahn
modules that call them on every connection and frame: the text is only built
if the line is emitted, so debug output is unchanged.
``use_small_frame_masker`` unmasks frames under 128 bytes with one integer
XOR instead (the size below which Autobahn itself picks its scalar masker);
larger frames keep Autobahn's.

Both change Autobahn's modules for the whole process, so neither runs on
import: :mod:`socketdock.tuning` calls them when the service starts, and each
returns the function that puts Autobahn back as it was (tests call it).
"""

from __future__ import annotations

from collections.abc import Callable
from pprint import pformat
from types import FunctionType
from typing import Any, TypeVar, cast

import autobahn.twisted.websocket as _twisted_module
import autobahn.websocket.protocol as _protocol_module
from autobahn.util import hltype, hlval
from autobahn.websocket.protocol import WebSocketServerProtocol
from autobahn.websocket.xormasker import create_xor_masker as _autobahn_create_xor_masker

_P = TypeVar("_P", bound=WebSocketServerProtocol)


class _Lazy:
    """Calls ``render(*args, **kwargs)`` only when turned into text."""

    __slots__ = ("_args", "_kwargs", "_render")

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


def _replace(targets: list[tuple[Any, str, Any]]) -> Callable[[], None]:
    """
    Set each ``(module, name, value)`` and return the undo.  A name that is
    already ours is left alone and its undo skips it, so nested engagements
    (two instances in one test) undo in order.
    """
    saved = []
    for module, name, value in targets:
        original = getattr(module, name)
        if getattr(original, "_socketdock_patch", False):
            continue
        saved.append((module, name, original))
        value._socketdock_patch = True
        setattr(module, name, value)

    def undo() -> None:
        for module, name, original in reversed(saved):
            setattr(module, name, original)

    return undo


def defer_debug_formatting() -> Callable[[], None]:
    """
    Make Autobahn format its debug-line arguments only for emitted lines.

    :returns: the undo.
    """
    targets: list[tuple[Any, str, Any]] = [(_protocol_module, "pformat", _lazy(pformat))]
    for module in (_protocol_module, _twisted_module):
        targets.append((module, "hltype", _lazy(hltype)))
        targets.append((module, "hlval", _lazy(hlval)))
    return _replace(targets)


class SmallFrameMasker:
    """
    Autobahn's masker interface (``pointer``, ``reset``, ``process``) for a
    frame of known small size: XOR the payload, read as one big integer,
    with the key repeated from where the last chunk left off.
    """

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        n = len(data)
        if not n:
            return b""
        shift = self._ptr & 3
        key = (self._mask * ((shift + n) // 4 + 1))[shift : shift + n]
        self._ptr += n
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def use_small_frame_masker() -> Callable[[], None]:
    """
    Let Autobahn's protocol module unmask small frames with :class:`SmallFrameMasker`.

    :returns: the undo.
    """
    autobahns = _autobahn_create_xor_masker

    def create_xor_masker(mask: bytes, length: int | None = None) -> Any:
        if length is not None and length < 128:
            return SmallFrameMasker(mask)
        return autobahns(mask, length)

    return _replace([(_protocol_module, "create_xor_masker", create_xor_masker)])


def with_options(protocol: type[_P], factory: Any) -> type[_P]:
    """
    A subclass of ``protocol`` with ``factory``'s current protocol options as
    class attributes, so instances do not copy them (see the module doc).
    """
    attributes = {
        name: _as_class_attribute(getattr(factory, name)) for name in protocol.CONFIG_ATTRS
    }
    attributes["__module__"] = protocol.__module__
    return cast("type[_P]", type(protocol.__name__, (protocol,), attributes))


def _as_class_attribute(value: Any) -> Any:
    # A function stored on a class would turn into a method and receive the
    # protocol as its first argument (perMessageCompressionAccept is one).
    if isinstance(value, FunctionType):
        return staticmethod(value)
    return value
