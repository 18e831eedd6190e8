"""
What every route answered through an :class:`~socketdock.relay.reach.IReach`
is made of: :class:`Leaf` (a reach method bound to one connection or tag, and
how much body it reads), :func:`answer` (a Deferred to a response, at once
when it has already fired), and :func:`failed`, the one table from a failure
to a status for the id, tag, confirm, state and listing routes alike.

The send and disconnect leaves are here because ``/socket/<id>`` and
``/tags/<tag>`` share them.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from socketdock.api.resources import (
    CLOSE_BODY_LIMIT,
    ApiResource,
    BadBody,
    close_request,
    plain,
    read_body,
    read_frame,
)
from socketdock.relay.confirm import Gone, Unconfirmed
from socketdock.relay.listing import BadCursor
from socketdock.relay.reach import InvalidTags, Unreachable
from socketdock.relay.registry import NotLive, OutboundFull
from socketdock.relay.state import InvalidState

_log = Logger()

#: How a route renders its success: the request and what the reach fired with.
Answer = Callable[[Request, object], bytes]


def failed(request: Request, failure: Failure) -> bytes:
    """
    The answer for a failure a reach may fire with (the table in
    :mod:`socketdock.relay.reach`); anything else is a 500, logged.
    """
    why = failure.value
    if isinstance(why, NotLive):
        return plain(request, 404, "no such live connection")
    if isinstance(why, (InvalidTags, BadCursor)):
        return plain(request, 400, str(why))
    if isinstance(why, InvalidState):
        return plain(request, why.status, str(why))
    if isinstance(why, OutboundFull):
        request.setHeader(b"retry-after", b"1")
        return plain(request, 503, why.why)
    if isinstance(why, Unreachable):
        request.setHeader(b"retry-after", str(why.retry_after).encode("ascii"))
        return plain(request, 503, why.why)
    if isinstance(why, Unconfirmed):
        return plain(request, 504, "the client did not confirm in time; it may not have read it")
    if isinstance(why, Gone):
        return plain(request, 410, "the connection closed before its client confirmed")
    _log.failure("callback API request {path} failed", failure, path=request.path)
    return plain(request, 500, "internal error; see the log")


def _rendered(request: Request, result: object, ok: Answer) -> bytes:
    if isinstance(result, Failure):
        return failed(request, result)
    return ok(request, result)


def answer(request: Request, d: Deferred, ok: Answer):
    """
    Answer with ``ok(request, result)``, or what :func:`failed` makes of a
    failure, once ``d`` fires: at once when it has already fired (the local
    case: no extra turn of the reactor, no Deferred of its own); a client gone
    meanwhile gets nothing written.
    """
    settled: list = []
    d.addBoth(settled.append)
    if settled:
        # The hot path (a local send): rendered now, with no turn of the reactor.
        return _rendered(request, settled[0], ok)
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)

    def later(_: None) -> None:
        if not gone:
            request.write(_rendered(request, settled[0], ok))
            request.finish()

    d.addCallback(later)
    return NOT_DONE_YET


class Leaf(ApiResource):
    """
    A route's last segment: ``ask`` is the reach method it calls, bound to one
    connection or tag.  A ``POST`` reads at most ``limit`` body bytes (the
    class's own when not given); any other method's body is dropped unread.
    """

    isLeaf = True
    #: The most body bytes a POST may have.
    limit = 0

    def __init__(self, ask: Callable[..., Deferred], limit: int | None = None) -> None:
        super().__init__()
        self._ask = ask
        if limit is not None:
            self.limit = limit

    def body_limit(self, request: Request) -> int:
        return self.limit if request.method == b"POST" else 0


class FrameThroughReach(Leaf):
    """
    ``POST .../send``: the body becomes one frame (SPEC §4's rule), handed to
    ``ask(payload, is_binary)``; ``ok`` renders what it fires with.
    """

    def __init__(self, ask: Callable[[bytes, bool], Deferred], limit: int, ok: Answer) -> None:
        super().__init__(ask, limit)
        self._ok = ok

    def render_POST(self, request: Request):
        try:
            payload, is_binary = read_frame(request, self.limit)
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        return answer(request, self._ask(payload, is_binary), self._ok)


def close_through(request: Request, close: Callable[[int, str], Deferred], ok: Answer):
    """Read a close body (optional code and reason), then ask ``close``; answer it."""
    try:
        code, reason = close_request(read_body(request, CLOSE_BODY_LIMIT))
    except BadBody as bad:
        return plain(request, bad.status, bad.reason)
    return answer(request, close(code, reason), ok)


class CloseThroughReach(Leaf):
    """``POST .../disconnect``: ``ask(code, reason)``; ``ok`` renders what it fires with."""

    limit = CLOSE_BODY_LIMIT

    def __init__(self, ask: Callable[[int, str], Deferred], ok: Answer) -> None:
        super().__init__(ask)
        self._ok = ok

    def render_POST(self, request: Request):
        return close_through(request, self._ask, self._ok)
