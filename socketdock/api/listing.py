"""
``GET /connections`` and ``GET /tags/<tag>/connections`` (SPEC §9): this
instance's live connections, page by page, for a backend to reconcile its own
records against after a restart.

The cursor is the number of the last connection a page listed; connections
are numbered in the order they arrive, so a walk sees each one that stays
live exactly once however many come and go meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock.api.resources import ApiResource, as_json, plain
from socketdock.api.tags import BadTag, TagsResource
from socketdock.relay.reach import InvalidTags, IReach
from socketdock.relay.registry import Registry
from socketdock.relay.tags import tag_from_path

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadPage(ValueError):
    """A ``limit`` or ``cursor`` that cannot be used (400)."""


def page_request(request: Request) -> tuple[int, int]:
    """
    ``(after, limit)`` from the query string.

    :raises BadPage: with a one-line reason.
    """
    args = request.args or {}
    limit_values = args.get(b"limit", [])
    cursor_values = args.get(b"cursor", [])
    if len(limit_values) > 1 or len(cursor_values) > 1:
        raise BadPage("limit and cursor may each be given once")
    limit = DEFAULT_LIMIT
    if limit_values:
        text = limit_values[0].decode("ascii", "replace")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadPage(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(text)
    after = 0
    if cursor_values and cursor_values[0]:
        text = cursor_values[0].decode("ascii", "replace")
        if not text.isdigit() or len(text) > 20:
            raise BadPage("cursor is not one this API gave")
        after = int(text)
    return after, limit


class ConnectionsResource(ApiResource):
    """
    One page of live connections: all of this instance's, or those carrying a tag.

    :param instance: this instance's name (its ``externalhostandport``).
    """

    isLeaf = True

    def __init__(
        self, registry: Registry, instance: Callable[[], str], tag: str | None = None
    ) -> None:
        super().__init__()
        self._registry = registry
        self._instance = instance
        self._tag = tag

    def render_GET(self, request: Request) -> bytes:
        try:
            after, limit = page_request(request)
        except BadPage as e:
            return plain(request, 400, str(e))
        found, last = self._registry.page(after, limit, self._tag)
        instance = self._instance()
        entries = []
        for connection in found:
            described = connection.describe()
            entries.append(
                {
                    "connection_id": connection.connection_id,
                    "connected_at": described.get("connected_at"),
                    "remote": described.get("remote"),
                    "tags": list(connection.tags),
                    "instance": instance,
                }
            )
        cursor = None if last is None else str(last)
        return as_json(request, {"connections": entries, "cursor": cursor})


class TagsWithListing(TagsResource):
    """``/tags/``, with ``/tags/<tag>/connections`` listing this instance's carriers."""

    def __init__(
        self, reach: IReach, max_message_size: int, registry: Registry, instance: Callable[[], str]
    ) -> None:
        super().__init__(reach, max_message_size)
        self._registry = registry
        self._instance = instance

    def getChild(self, name: bytes, request: Request) -> Resource:
        if name and request.postpath == [b"connections"]:
            try:
                tag = tag_from_path(name)
            except InvalidTags as e:
                return BadTag(str(e))
            assert request.prepath is not None  # mid-traversal
            del request.postpath[:]
            request.prepath.append(b"connections")
            return ConnectionsResource(self._registry, self._instance, tag)
        return super().getChild(name, request)
