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
from inspect import signature
from pprint import pformat
from types import FunctionType
from typing import Any, TypeVar, cast

import autobahn.twisted.websocket as _twisted_module
import autobahn.websocket.protocol as _protocol_module
from autobahn.util import hltype, hlval
from autobahn.websocket.protocol import WebSocketServerProtocol
from autobahn.websocket.xormasker import create_xor_masker as _autobahn_create_xor_masker

from socketdock.tuned import CheckFailed, require, require_attributes

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


def check_options() -> None:
    """
    :func:`with_options` holds where Autobahn still copies each of
    ``CONFIG_ATTRS`` from the factory only when the protocol lacks it: a
    specialised protocol, connected, keeps none in its own ``__dict__`` and
    reads the factory's values.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory
    from autobahn.twisted.websocket import WebSocketServerProtocol as TwistedServerProtocol
    from twisted.internet.error import ConnectionDone
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    names = list(getattr(TwistedServerProtocol, "CONFIG_ATTRS", None) or ())
    require(names and all(isinstance(n, str) for n in names), "Autobahn has no CONFIG_ATTRS list")
    factory = WebSocketServerFactory("ws://127.0.0.1:1", reactor=Clock())
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0)
    require_attributes(factory, tuple(names), "WebSocketServerFactory")
    factory.protocol = with_options(TwistedServerProtocol, factory)
    protocol = factory.buildProtocol(None)
    assert protocol is not None  # Autobahn's factory builds for any address
    protocol.makeConnection(StringTransport())
    try:
        copied = [name for name in names if name in vars(protocol)]
        if copied:
            raise CheckFailed(f"Autobahn copied {', '.join(copied[:3])} into the connection anyway")
        differ = [name for name in names if getattr(protocol, name) != getattr(factory, name)]
        if differ:
            raise CheckFailed(
                f"a specialised connection reads another {differ[0]} than the factory"
            )
    finally:
        protocol.connectionLost(Failure(ConnectionDone()))


def check_debug_formatting() -> None:
    """
    :func:`defer_debug_formatting` replaces names that Autobahn's modules
    must still have, and its lazy text must read as the eager one.
    """
    require_attributes(
        _protocol_module, ("pformat", "hltype", "hlval"), "autobahn.websocket.protocol"
    )
    require_attributes(_twisted_module, ("hltype", "hlval"), "autobahn.twisted.websocket")
    samples = [(hltype, (WebSocketServerProtocol,)), (hlval, (1234,)), (pformat, ([("a", 1)],))]
    for render, args in samples:
        require(
            f"{_lazy(render)(*args)}" == render(*args),
            f"the deferred {render.__name__} text differs from Autobahn's",
        )


def check_small_frame_masker() -> None:
    """
    :func:`use_small_frame_masker` stands in for ``create_xor_masker(mask,
    length)`` in Autobahn's protocol module: the name must be there, take
    that call, and unmask like Autobahn's own masker in any chunking.
    """
    original = getattr(_protocol_module, "create_xor_masker", None)
    if original is None:
        raise CheckFailed("autobahn.websocket.protocol has no create_xor_masker")
    try:
        signature(original).bind(b"abcd", 1)
    except (TypeError, ValueError):
        raise CheckFailed("Autobahn's create_xor_masker no longer takes (mask, length)") from None
    payload = bytes(range(7, 7 + 127))
    for mask in (b"\x00\x00\x00\x00", b"\x9f\x31\xc4\x0e", b"\xff\xff\xff\xff"):
        for length in (0, 1, 3, 4, 5, 63, 127):
            data = payload[:length]
            for step in (1, 3, 4, 7, 128):
                ours, theirs = SmallFrameMasker(mask), _autobahn_create_xor_masker(mask, length)
                chunks = [data[i : i + step] for i in range(0, length, step)] or [b""]
                for chunk in chunks:
                    if ours.process(chunk) != theirs.process(chunk):
                        raise CheckFailed("the small-frame masker unmasks unlike Autobahn's")
                    if ours.pointer() != theirs.pointer():
                        raise CheckFailed("the small-frame masker counts unlike Autobahn's")
