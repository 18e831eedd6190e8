"""
``POST /socket/<id>/send?confirm=<seconds>`` and ``POST /tags/<tag>/send?confirm=``
(SPEC §9): the send answers once the client proves it read the frame.

A send without ``confirm`` never comes here: the plain routes stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from socketdock.api.resources import (
    ApiResource,
    BadBody,
    answer_when_fired,
    as_json,
    ok,
    plain,
    read_frame,
)
from socketdock.relay.confirm import Gone, Tally, Unconfirmed, confirm_timeout
from socketdock.relay.reach import Unreachable
from socketdock.relay.registry import NotLive, OutboundFull

_log = Logger()


def wants_confirm(request: Request) -> bool:
    """Whether the query string asks for a confirmed send."""
    return bool(request.args) and b"confirm" in request.args


def _seconds(request: Request) -> float:
    values = request.args.get(b"confirm", []) if request.args else []
    if len(values) != 1:
        raise BadBody(400, "confirm given more than once")
    try:
        return confirm_timeout(values[0].decode("ascii", "replace"))
    except ValueError as e:
        raise BadBody(400, str(e)) from None


class ConfirmedSend(ApiResource):
    """
    The body becomes one frame, handed to ``confirm`` with the seconds asked
    for; a connection's send answers ``OK``, a tag's the :class:`Tally`.
    """

    isLeaf = True

    def __init__(
        self, confirm: Callable[[bytes, bool, float], Deferred], max_message_size: int
    ) -> None:
        super().__init__()
        self._confirm = confirm
        self._max = max_message_size

    def body_limit(self, request: Request) -> int:
        return self._max if request.method == b"POST" else 0

    def render_POST(self, request: Request):
        try:
            seconds = _seconds(request)
            payload, is_binary = read_frame(request, self._max)
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        return answer_when_fired(request, self._confirm(payload, is_binary, seconds), _render)


def _render(request: Request, result: object) -> bytes:
    if isinstance(result, Tally):
        if result.none:
            return plain(request, 404, "no live connection carries this tag")
        return as_json(request, result.as_json())
    if not isinstance(result, Failure):
        return ok(request)
    if result.check(NotLive):
        return plain(request, 404, "no such live connection")
    if result.check(Unconfirmed):
        return plain(request, 504, "the client did not confirm in time; it may not have read it")
    if result.check(Gone):
        return plain(request, 410, "the connection closed before its client confirmed")
    if result.check(OutboundFull):
        request.setHeader(b"retry-after", b"1")
        return plain(request, 503, "client is not reading; retry later")
    if isinstance(result.value, Unreachable):
        request.setHeader(b"retry-after", str(result.value.retry_after).encode("ascii"))
        return plain(request, 503, result.value.why)
    _log.failure("confirmed send {path} failed", result, path=request.path)
    return plain(request, 500, "internal error; see the log")
