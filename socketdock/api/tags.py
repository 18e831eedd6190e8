"""
The callback API's tag routes (SPEC §8): ``/tags/<tag>`` and its ``send`` and
``disconnect``, and ``POST /socket/<id>/tags``.

They ask an :class:`IReach` only, so the same resources serve one instance and a
cluster; its failures map to statuses here, "cannot know" included (503 +
``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.confirm import ConfirmedSend, wants_confirm
from socketdock.api.resources import (
    CLOSE_BODY_LIMIT,
    ApiResource,
    BadBody,
    ConnectionResource,
    NotFound,
    SocketsResource,
    answer_when_fired,
    as_json,
    close_request,
    parse_json,
    plain,
    read_body,
    read_frame,
)
from socketdock.api.state import StateResource
from socketdock.relay.reach import HERE_ONLY, InvalidTags, IReach, Reached, Unreachable
from socketdock.relay.registry import NotLive, OutboundFull, Registry
from socketdock.relay.tags import check_tag_list, tag_from_path

_NOBODY = "no live connection carries this tag"
#: The most bytes a ``POST /socket/<id>/tags`` body may have: room for 64
#: tags of 200 bytes in each list, escaped.
TAGS_BODY_LIMIT = 64 * 1024
_log = Logger()


def _answer(request: Request, d: Deferred, ok: Callable[[Request, object], bytes]):
    """Answer with ``ok(request, result)``, or the status ``d``'s failure maps to."""
    return answer_when_fired(request, d, lambda r, result: _render(r, result, ok))


def _render(request: Request, result: object, ok: Callable[[Request, object], bytes]) -> bytes:
    if not isinstance(result, Failure):
        return ok(request, result)
    if result.check(NotLive):
        return plain(request, 404, "no such live connection")
    if result.check(InvalidTags):
        return plain(request, 400, str(result.value))
    if result.check(OutboundFull):
        request.setHeader(b"retry-after", b"1")
        return plain(request, 503, getattr(result.value, "why", OutboundFull.why))
    if isinstance(result.value, Unreachable):
        request.setHeader(b"retry-after", str(result.value.retry_after).encode("ascii"))
        return plain(request, 503, getattr(result.value, "why", OutboundFull.why))
    _log.failure("callback API request {path} failed", result, path=request.path)
    return plain(request, 500, "internal error; see the log")


def _reached(request: Request, reached: object) -> bytes:
    assert isinstance(reached, Reached)
    if reached.none:
        return plain(request, 404, _NOBODY)
    if reached.connections == 0 and reached.instances is None and reached.full:
        # Nobody could take it: retrying the whole send duplicates nothing.
        request.setHeader(b"retry-after", b"1")
        return plain(request, 503, "no client carrying this tag is reading; retry later")
    return as_json(request, reached.as_json())


def tag_change(body: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """
    The ``add`` and ``remove`` lists of a ``POST /socket/<id>/tags`` body.

    :raises InvalidTags: not a JSON object, or a list or tag against the rules.
    """
    try:
        asked = parse_json(body)
    except BadBody as bad:
        raise InvalidTags(bad.reason) from None
    if not isinstance(asked, dict):
        raise InvalidTags('body must be a JSON object {"add": [...], "remove": [...]}')
    add = check_tag_list(asked.get("add", []), "add")
    remove = check_tag_list(asked.get("remove", []), "remove")
    return add, remove


#: How a reach-backed route renders its success: the request and the result.
Answer = Callable[[Request, object], bytes]


class FrameThroughReach(ApiResource):
    """
    ``POST .../send`` through an :class:`IReach`: the body becomes one frame
    (SPEC §4's rule), handed to ``send``; ``answer`` renders its result.  One
    class for ``/tags/<tag>/send`` and, in cluster mode, ``/socket/<id>/send``.
    """

    isLeaf = True

    def __init__(
        self, send: Callable[[bytes, bool], Deferred], max_message_size: int, answer: Answer
    ) -> None:
        super().__init__()
        self._send = send
        self._max = max_message_size
        self._ok = answer

    def body_limit(self, request: Request) -> int:
        return self._max if request.method == b"POST" else 0

    def render_POST(self, request: Request):
        try:
            payload, is_binary = read_frame(request, self._max)
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        return _answer(request, self._send(payload, is_binary), self._ok)


def close_through_reach(request: Request, close: Callable[[int, str], Deferred], answer: Answer):
    """Read a close body (optional code and reason), then ask ``close``; answer it."""
    try:
        code, reason = close_request(read_body(request, CLOSE_BODY_LIMIT))
    except BadBody as bad:
        return plain(request, bad.status, bad.reason)
    return _answer(request, close(code, reason), answer)


class CloseThroughReach(ApiResource):
    """
    ``POST .../disconnect`` through an :class:`IReach`: one class for
    ``/tags/<tag>/disconnect`` and, in cluster mode, ``/socket/<id>/disconnect``.
    """

    isLeaf = True

    def __init__(self, close: Callable[[int, str], Deferred], answer: Answer) -> None:
        super().__init__()
        self._close = close
        self._ok = answer

    def body_limit(self, request: Request) -> int:
        return CLOSE_BODY_LIMIT if request.method == b"POST" else 0

    def render_POST(self, request: Request):
        return close_through_reach(request, self._close, self._ok)


class TagResource(ApiResource):
    """``GET /tags/<tag>``: how many live connections carry it."""

    def __init__(self, reach: IReach, tag: str, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._tag = tag
        self._max = max_message_size

    def getChild(self, name: bytes, request: Request) -> Resource:
        if request.postpath:
            return NotFound()
        if name == b"send" and wants_confirm(request):
            # From another instance fanning a confirmed send out: its part only.
            everywhere = request.getHeader(HERE_ONLY) is None
            confirm = partial(self._reach.confirm_to_tag, self._tag, everywhere=everywhere)
            return ConfirmedSend(confirm, self._max)
        if name == b"send":
            return FrameThroughReach(
                partial(self._reach.send_to_tag, self._tag), self._max, _reached
            )
        if name == b"disconnect":
            return CloseThroughReach(partial(self._reach.close_tag, self._tag), _reached)
        return NotFound()

    def render_GET(self, request: Request):
        return _answer(request, self._reach.count_tag(self._tag), _reached)


class BadTag(ApiResource):
    """
    A path segment that cannot be a tag: 400 with the rule it breaks, on every
    route below it and for every method -- never the 404 a backend reads as
    "nobody carries it" (SPEC §8), even when the request has a body.
    """

    isLeaf = True

    def __init__(self, why: str) -> None:
        super().__init__()
        self._why = why

    def refusal(self, request: Request) -> bytes:
        return plain(request, 400, self._why)

    def render(self, request: Request) -> bytes:
        return self.refusal(request)


class TagsResource(Resource):
    """``/tags/``: one child per percent-encoded tag."""

    def __init__(self, reach: IReach, max_message_size: int) -> None:
        super().__init__()
        self._reach = reach
        self._max = max_message_size

    def getChild(self, name: bytes, request: Request) -> Resource:
        if name == b"" and not request.postpath:
            return NotFound()
        try:
            tag = tag_from_path(name)
        except InvalidTags as e:
            return BadTag(str(e))
        return TagResource(self._reach, tag, self._max)

    def render(self, request: Request) -> bytes:
        return plain(request, 404, "no such path")


class ConnectionTagsResource(ApiResource):
    """``POST /socket/<id>/tags``: change one connection's tags, answer them."""

    isLeaf = True

    def __init__(self, reach: IReach, connection_id: str) -> None:
        super().__init__()
        self._reach = reach
        self._id = connection_id

    def body_limit(self, request: Request) -> int:
        return TAGS_BODY_LIMIT if request.method == b"POST" else 0

    def render_POST(self, request: Request):
        try:
            add, remove = tag_change(read_body(request, TAGS_BODY_LIMIT))
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        except InvalidTags as e:
            return plain(request, 400, str(e))
        d = self._reach.change_tags(self._id, add, remove)
        return _answer(request, d, lambda r, tags: as_json(r, {"tags": list(tags)}))  # type: ignore[call-overload]


class SocketsWithTags(SocketsResource):
    """``/socket/``, with ``/socket/<id>/tags`` answered through an :class:`IReach`."""

    def __init__(self, registry: Registry, max_message_size: int, reach: IReach) -> None:
        super().__init__(registry, max_message_size)
        self._reach = reach

    def getChild(self, name: bytes, request: Request) -> Resource:
        child = super().getChild(name, request)
        if isinstance(child, ConnectionResource) and request.postpath == [b"tags"]:
            assert request.postpath is not None and request.prepath is not None  # mid-traversal
            del request.postpath[:]
            request.prepath.append(b"tags")
            return ConnectionTagsResource(self._reach, name.decode("ascii"))
        if isinstance(child, ConnectionResource) and request.postpath == [b"state"]:
            assert request.postpath is not None and request.prepath is not None  # mid-traversal
            del request.postpath[:]
            request.prepath.append(b"state")
            return StateResource(self._reach, name.decode("ascii"))
        if (
            isinstance(child, ConnectionResource)
            and request.postpath == [b"send"]
            and wants_confirm(request)
        ):
            assert request.postpath is not None and request.prepath is not None  # mid-traversal
            del request.postpath[:]
            request.prepath.append(b"send")
            confirm = partial(self._reach.confirm_to_connection, name.decode("ascii"))
            return ConfirmedSend(confirm, self._max)
        return child
