"""
``POST /socket/<id>/send?confirm=<seconds>`` and ``POST /tags/<tag>/send?confirm=``
(SPEC §9): the send answers once the client proves it read the frame.

A send without ``confirm`` never comes here: the plain routes stay as they were.
"""

from __future__ import annotations

from twisted.web.server import Request

from socketdock.api.resources import BadBody, as_json, ok, plain, read_frame
from socketdock.api.routes import Leaf, answer
from socketdock.relay.confirm import Tally, confirm_timeout


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


class ConfirmedSend(Leaf):
    """
    The body (at most ``limit`` bytes) becomes one frame, handed to
    ``ask(payload, is_binary, seconds)`` with the seconds asked for; a
    connection's send answers ``OK``, a tag's the :class:`Tally`.
    """

    def render_POST(self, request: Request):
        try:
            seconds = _seconds(request)
            payload, is_binary = read_frame(request, self.limit)
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        return answer(request, self._ask(payload, is_binary, seconds), _confirmed)


def _confirmed(request: Request, result: object) -> bytes:
    if isinstance(result, Tally):
        if result.none:
            return plain(request, 404, "no live connection carries this tag")
        return as_json(request, result.as_json())
    return ok(request)
