"""
``/socket/<id>`` answered through an :class:`IReach` (cluster mode, SPEC §8): the
connection may be held by another instance, which the reach asks.

Without ``cluster`` the older resources in :mod:`socketdock.api.resources` read
the registry directly (the hot path, unchanged); these give the same
answers, with 503 + ``Retry-After`` added for "cannot know right now".
"""

from __future__ import annotations

from functools import partial

from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.resources import (
    CLOSE_BODY_LIMIT,
    ApiResource,
    ConnectionResource,
    NotFound,
    as_json,
    ok,
)
from socketdock.api.tags import (
    CloseThroughReach,
    ConnectionTagsResource,
    FrameThroughReach,
    SocketsWithTags,
    _answer,
    close_through_reach,
)
from socketdock.relay.reach import HOP_HEADER, IReach
from socketdock.relay.registry import Registry


def _ok(request: Request, _: object) -> bytes:
    return ok(request)


class ConnectionAnywhere(ApiResource):
    """``/socket/<id>`` (GET, DELETE, and its children) for a connection on any instance."""

    def __init__(self, reach: IReach, connection_id: str, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id
        self._max = max_message_size

    def getChild(self, name: bytes, request: Request) -> Resource:
        if request.postpath:
            return NotFound()
        if name == b"send":
            send = partial(self._reach.send_to_connection, self._id)
            return FrameThroughReach(send, self._max, _ok)
        if name == b"disconnect":
            return CloseThroughReach(partial(self._reach.close_connection, self._id), _ok)
        if name == b"tags":
            return ConnectionTagsResource(self._reach, self._id)
        return NotFound()

    def body_limit(self, request: Request) -> int:
        return CLOSE_BODY_LIMIT if request.method == b"DELETE" else 0

    def render_GET(self, request: Request):
        return _answer(request, self._reach.describe_connection(self._id), as_json)

    def render_DELETE(self, request: Request):
        return close_through_reach(request, partial(self._reach.close_connection, self._id), _ok)


class SocketsAnywhere(SocketsWithTags):
    """
    ``/socket/``: every route through the reach; a request another instance
    forwarded (it carries :data:`HOP_HEADER`) through the reach's
    ``here_only()``, so that it is answered here or 404, never forwarded again.
    """

    def __init__(self, registry: Registry, max_message_size: int, reach: IReach) -> None:
        super().__init__(registry, max_message_size, reach)
        self._anywhere = reach
        here_only = getattr(reach, "here_only", None)
        self._here: IReach = reach if here_only is None else here_only()

    def getChild(self, name: bytes, request: Request) -> Resource:
        child = SocketsWithTags.getChild(self, name, request)
        reach = self._here if request.requestHeaders.hasHeader(HOP_HEADER) else self._anywhere
        if isinstance(child, ConnectionTagsResource):
            return ConnectionTagsResource(reach, name.decode("ascii"))
        if isinstance(child, ConnectionResource):
            return ConnectionAnywhere(reach, name.decode("ascii"), self._max)
        return child
