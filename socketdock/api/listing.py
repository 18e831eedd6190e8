"""
``GET /connections`` and ``GET /tags/<tag>/connections`` (SPEC §9): live
connections, page by page, for a backend to reconcile its own records
against after a restart.

A cursor names the last connection a page listed: connections are numbered
in the order they arrive on an instance, so a walk sees each one that stays
live exactly once however many come and go meanwhile.  In cluster mode a
tag's walk goes through the instances one after the other
(:meth:`socketdock.relay.reach.IReach.list_tag`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.server import Request

from socketdock.api.resources import ApiResource, as_json, plain
from socketdock.api.routes import Leaf, answer
from socketdock.relay.listing import BadCursor, local_cursor, local_page
from socketdock.relay.reach import HERE_ONLY
from socketdock.relay.registry import Registry

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def page_request(request: Request) -> tuple[str | None, int]:
    """
    ``(cursor, limit)`` from the query string.

    :raises BadCursor: with a one-line reason.
    """
    args = request.args or {}
    limit_values = args.get(b"limit", [])
    cursor_values = args.get(b"cursor", [])
    if len(limit_values) > 1 or len(cursor_values) > 1:
        raise BadCursor("limit and cursor may each be given once")
    limit = DEFAULT_LIMIT
    if limit_values:
        text = limit_values[0].decode("ascii", "replace")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadCursor(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(text)
    cursor = cursor_values[0].decode("ascii", "replace") if cursor_values else None
    return cursor or None, limit


class ConnectionsResource(ApiResource):
    """
    ``GET /connections``: one page of this instance's live connections.

    :param instance: this instance's name (its ``externalhostandport``).
    """

    isLeaf = True

    def __init__(self, registry: Registry, instance: Callable[[], str]) -> None:
        super().__init__()
        self._registry = registry
        self._instance = instance

    def render_GET(self, request: Request) -> bytes:
        try:
            cursor, limit = page_request(request)
            after = local_cursor(cursor)
        except BadCursor as e:
            return plain(request, 400, str(e))
        return as_json(request, local_page(self._registry, None, after, limit, self._instance()))


class TagConnectionsResource(Leaf):
    """
    ``GET /tags/<tag>/connections``: one page of the walk over its carriers;
    ``ask(cursor, limit, everywhere)`` is the reach's ``list_tag`` for that tag.
    """

    def render_GET(self, request: Request):
        try:
            cursor, limit = page_request(request)
        except BadCursor as e:
            return plain(request, 400, str(e))
        everywhere = request.getHeader(HERE_ONLY) is None
        return answer(request, self._ask(cursor, limit, everywhere), as_json)
