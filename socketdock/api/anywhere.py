"""
``/socket/<id>`` answered through an L{IReach} (cluster mode, SPEC §8): the
connection may be held by another instance, which the reach asks.

Without ``cluster`` the older resources in L{socketdock.api.resources} read
the registry directly (the hot path, unchanged); these give the same
answers, with 503 + ``Retry-After`` added for "cannot know right now".
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.resources import (
    ApiResource,
    ConnectionResource,
    NotFound,
    as_json,
    close_request,
    plain,
)
from socketdock.api.tags import (
    ConnectionTagsResource,
    SocketsWithTags,
    _answer,
    read_frame,
)
from socketdock.relay.reach import IReach
from socketdock.relay.registry import Registry


def _ok(request: Request, _: object) -> bytes:
    return plain(request, 200, "OK")


class SendAnywhere(ApiResource):
    """``POST /socket/<id>/send`` for a connection on any instance."""

    isLeaf = True

    def __init__(self, reach: IReach, connection_id: str, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id
        self._max = max_message_size

    def render_POST(self, request: Request):
        frame = read_frame(request, self._max)
        if isinstance(frame[0], int):
            return plain(request, frame[0], str(frame[1]))
        payload, is_binary = frame
        assert isinstance(payload, bytes) and isinstance(is_binary, bool)
        return _answer(request, self._reach.send_to_connection(self._id, payload, is_binary), _ok)


def _close(reach: IReach, connection_id: str, request: Request):
    asked = close_request(request.content.read(4096))
    if isinstance(asked, str):
        return plain(request, 400, asked)
    code, reason = asked
    return _answer(request, reach.close_connection(connection_id, code, reason), _ok)


class DisconnectAnywhere(ApiResource):
    """``POST /socket/<id>/disconnect`` for a connection on any instance."""

    isLeaf = True

    def __init__(self, reach: IReach, connection_id: str) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id

    def render_POST(self, request: Request):
        return _close(self._reach, self._id, request)


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
            return SendAnywhere(self._reach, self._id, self._max)
        if name == b"disconnect":
            return DisconnectAnywhere(self._reach, self._id)
        if name == b"tags":
            return ConnectionTagsResource(self._reach, self._id)
        return NotFound()

    def render_GET(self, request: Request):
        return _answer(request, self._reach.describe_connection(self._id), as_json)

    def render_DELETE(self, request: Request):
        return _close(self._reach, self._id, request)


class SocketsAnywhere(SocketsWithTags):
    """``/socket/``: every route through the reach."""

    def __init__(self, registry: Registry, max_message_size: int, reach: IReach) -> None:
        super().__init__(registry, max_message_size, reach)
        self._anywhere = reach

    def getChild(self, name: bytes, request: Request) -> Resource:
        child = SocketsWithTags.getChild(self, name, request)
        if isinstance(child, ConnectionResource):
            return ConnectionAnywhere(self._anywhere, name.decode("ascii"), self._max)
        return child
