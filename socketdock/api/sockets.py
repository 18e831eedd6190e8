"""
``/socket/<id>`` (SPEC §4, §8, §9): one connection, read, sent to, closed,
tagged or given state -- every route through an :class:`IReach`, so that
the same tree serves one instance (:class:`~socketdock.relay.localreach.LocalReach`)
and a cluster (:class:`~socketdock.cluster.reach.ClusterReach`, which asks
the instance holding the connection).

The send without ``confirm`` is the relay's hottest callback: locally the
reach hands back the connection's own, already fired, Deferred, and
:func:`~socketdock.api.routes.answer` renders it at once.
"""

from __future__ import annotations

from functools import partial

from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.confirm import ConfirmedSend, wants_confirm
from socketdock.api.resources import CLOSE_BODY_LIMIT, ApiResource, NotFound, as_json, ok, plain
from socketdock.api.routes import CloseThroughReach, FrameThroughReach, answer, close_through
from socketdock.api.state import StateResource
from socketdock.api.tags import ConnectionTagsResource
from socketdock.relay.reach import HOP_HEADER, IReach


class ConnectionResource(ApiResource):
    """``/socket/<id>``: read (GET) or close (DELETE) one connection; its routes below."""

    def __init__(self, reach: IReach, connection_id: str, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id
        self._max = max_message_size

    def getChild(self, name: bytes, request: Request) -> Resource:
        if request.postpath:
            return NotFound()
        reach, connection_id = self._reach, self._id
        if name == b"send":
            if wants_confirm(request):
                confirm = partial(reach.confirm_to_connection, connection_id)
                return ConfirmedSend(confirm, self._max)
            send = partial(reach.send_to_connection, connection_id)
            return FrameThroughReach(send, self._max, ok)
        if name == b"disconnect":
            return CloseThroughReach(partial(reach.close_connection, connection_id), ok)
        if name == b"tags":
            return ConnectionTagsResource(partial(reach.change_tags, connection_id))
        if name == b"state":
            return StateResource(partial(reach.set_state, connection_id))
        return NotFound()

    def body_limit(self, request: Request) -> int:
        return CLOSE_BODY_LIMIT if request.method == b"DELETE" else 0

    def render_GET(self, request: Request):
        return answer(request, self._reach.describe_connection(self._id), as_json)

    def render_DELETE(self, request: Request):
        return close_through(request, partial(self._reach.close_connection, self._id), ok)


class SocketsResource(Resource):
    """
    ``/socket/``: one child per connection id.  A request another instance
    forwarded (it carries :data:`~socketdock.relay.reach.HOP_HEADER`) goes
    through the reach's :meth:`~socketdock.relay.reach.IReach.here_only`, so it
    is answered here or 404, never forwarded again.
    """

    def __init__(self, reach: IReach, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._here = reach.here_only()
        self._max = max_message_size

    def getChild(self, name: bytes, request: Request) -> Resource:
        try:
            connection_id = name.decode("ascii")
        except UnicodeDecodeError:
            return NotFound()
        if not connection_id:
            return NotFound()
        reach = self._reach
        if reach is not self._here and request.requestHeaders.hasHeader(HOP_HEADER):
            reach = self._here
        return ConnectionResource(reach, connection_id, self._max)

    def refusal(self, request: Request) -> bytes:
        return plain(request, 404, "no such path")

    def render(self, request: Request) -> bytes:
        return self.refusal(request)
