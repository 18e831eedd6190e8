"""
``POST /socket/<id>/state`` (SPEC §9): the backend replaces the state it keeps
on a connection, echoed as ``meta.state`` on every later request about it.
"""

from __future__ import annotations

from twisted.web.server import Request

from socketdock.api.resources import BadBody, parse_json, plain, read_body
from socketdock.api.routes import Leaf, answer
from socketdock.relay.state import MAX_STATE, InvalidState, encode_state

#: The most body bytes read: room for a state written with spaces and
#: escapes; what counts against :data:`MAX_STATE` is its compact form.
STATE_BODY_LIMIT = 16 * MAX_STATE


class StateResource(Leaf):
    """
    ``POST /socket/<id>/state``: 200 ``{"state": ...}``, 404, 413, 400;
    ``ask(state)`` is the reach's ``set_state`` for that connection.
    """

    limit = STATE_BODY_LIMIT

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
        return answer(request, self._ask(text), _state)


def _state(request: Request, state: object) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    return b'{"state":' + str(state).encode("utf-8") + b"}"
