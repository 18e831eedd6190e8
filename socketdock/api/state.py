"""
``POST /socket/<id>/state`` (SPEC §9): the backend replaces the state it keeps
on a connection, echoed as ``meta.state`` on every later request about it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from socketdock.api.resources import (
    ApiResource,
    BadBody,
    answer_when_fired,
    parse_json,
    plain,
    read_body,
)
from socketdock.relay.reach import IReach, Unreachable
from socketdock.relay.registry import NotLive
from socketdock.relay.state import MAX_STATE, InvalidState, encode_state

#: The most body bytes read: room for a state written with spaces and
#: escapes; what counts against :data:`MAX_STATE` is its compact form.
STATE_BODY_LIMIT = 16 * MAX_STATE
_log = Logger()


class StateResource(ApiResource):
    """``POST /socket/<id>/state``: 200 ``{"state": ...}``, 404, 413, 400."""

    isLeaf = True

    def __init__(self, reach: IReach, connection_id: str) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id

    def body_limit(self, request: Request) -> int:
        return STATE_BODY_LIMIT if request.method == b"POST" else 0

    def render_POST(self, request: Request):
        try:
            body = read_body(request, STATE_BODY_LIMIT)
        except BadBody:
            return plain(request, 413, f"state larger than {MAX_STATE} bytes")
        try:
            text = encode_state(parse_json(body))
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        except InvalidState as e:
            return plain(request, e.status, str(e))
        d: Deferred = self._reach.set_state(self._id, text)
        return answer_when_fired(request, d, _render)


def _render(request: Request, result: object) -> bytes:
    if not isinstance(result, Failure):
        request.setHeader(b"content-type", b"application/json")
        return b'{"state":' + str(result).encode("utf-8") + b"}"
    if result.check(NotLive):
        return plain(request, 404, "no such live connection")
    if isinstance(result.value, InvalidState):
        return plain(request, result.value.status, str(result.value))
    if isinstance(result.value, Unreachable):
        request.setHeader(b"retry-after", str(result.value.retry_after).encode("ascii"))
        return plain(request, 503, result.value.why)
    _log.failure("state change {path} failed", result, path=request.path)
    return plain(request, 500, "internal error; see the log")
