"""
The public listener's connection cap at the accept: past it a connection is
answered 503 and closed at once, so the process keeps descriptors for the
callback API, ``/healthz`` and the backend (:mod:`socketdock.ops.filelimit`).

The place a connection takes is given back when it ends: by its HTTP channel,
or, once upgraded, by the WebSocket protocol the channel handed it to
(:func:`socketdock.ops.filelimit.hand_over`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from socketdock.ops.filelimit import no_release

_BODY = b"too many connections\n"
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BODY)).encode("ascii") + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + _BODY
)


class Full(Protocol):
    """Answers 503 without reading the request, and closes."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(_FULL)
        self.transport.loseConnection()


def counted(channel: type[HTTPChannel]) -> type[HTTPChannel]:
    """``channel``, giving back its place in the cap when its connection ends."""

    class Counted(channel):  # type: ignore[valid-type, misc]  # a class chosen at run time
        release: Callable[[], None] = staticmethod(no_release)

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            try:
                super().connectionLost(reason)
            finally:
                self.release()

    Counted.__name__ = Counted.__qualname__ = "Counted" + channel.__name__
    #: The channel class it counts (the stack's: see socketdock.tuning).
    Counted.uncounted = channel
    return Counted
