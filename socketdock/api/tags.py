"""
The callback API's tag routes (SPEC §8, §9): ``/tags/<tag>`` and its ``send``,
``disconnect`` and ``connections``, and ``POST /socket/<id>/tags``.

They ask an :class:`IReach` only, so the same resources serve one instance and a
cluster; a failure is answered by :func:`socketdock.api.routes.failed`.
"""

from __future__ import annotations

from functools import partial

from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.confirm import ConfirmedSend, wants_confirm
from socketdock.api.listing import TagConnectionsResource
from socketdock.api.resources import (
    ApiResource,
    BadBody,
    NotFound,
    as_json,
    parse_json,
    plain,
    read_body,
)
from socketdock.api.routes import CloseThroughReach, FrameThroughReach, Leaf, answer
from socketdock.relay.reach import HERE_ONLY, InvalidTags, IReach, Reached
from socketdock.relay.tags import check_tag_list, tag_from_path

_NOBODY = "no live connection carries this tag"
#: The most bytes a ``POST /socket/<id>/tags`` body may have: room for 64
#: tags of 200 bytes in each list, escaped.
TAGS_BODY_LIMIT = 64 * 1024


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


class TagResource(ApiResource):
    """``GET /tags/<tag>``: how many live connections carry it; its routes below."""

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
        if name == b"connections":
            return TagConnectionsResource(partial(self._reach.list_tag, self._tag))
        return NotFound()

    def render_GET(self, request: Request):
        return answer(request, self._reach.count_tag(self._tag), _reached)


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


class ConnectionTagsResource(Leaf):
    """
    ``POST /socket/<id>/tags``: change one connection's tags, answer them;
    ``ask(add, remove)`` is the reach's ``change_tags`` for that connection.
    """

    limit = TAGS_BODY_LIMIT

    def render_POST(self, request: Request):
        try:
            add, remove = tag_change(read_body(request, TAGS_BODY_LIMIT))
        except BadBody as bad:
            return plain(request, bad.status, bad.reason)
        except InvalidTags as e:
            return plain(request, 400, str(e))
        return answer(request, self._ask(add, remove), _tags)


def _tags(request: Request, tags: object) -> bytes:
    assert isinstance(tags, tuple)
    return as_json(request, {"tags": list(tags)})
