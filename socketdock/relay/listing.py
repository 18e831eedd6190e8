"""
The entries of ``GET /connections`` and ``GET /tags/<tag>/connections``
(SPEC §9), built from the registry's pages; shared by the callback API and
the cluster, which merges every instance's pages into one walk.
"""

from __future__ import annotations

from collections.abc import Iterable

from socketdock.relay.registry import IConnection, Registry


class BadCursor(ValueError):
    """A cursor the API did not give (400)."""


def local_cursor(cursor: str | None) -> int:
    """
    The number a local cursor carries (0 for none).

    :raises BadCursor: for anything else.
    """
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 20:
        raise BadCursor("cursor is not one this API gave")
    return int(cursor)


def entries(connections: Iterable[IConnection], instance: str) -> list[dict]:
    """One JSON object per connection."""
    found = []
    for connection in connections:
        described = connection.describe()
        found.append(
            {
                "connection_id": connection.connection_id,
                "connected_at": described.get("connected_at"),
                "remote": described.get("remote"),
                "tags": list(connection.tags),
                "instance": instance,
            }
        )
    return found


def local_page(registry: Registry, tag: str | None, after: int, limit: int, instance: str) -> dict:
    """One page of this instance's live connections: ``{"connections", "cursor"}``."""
    found, last = registry.page(after, limit, tag)
    return {
        "connections": entries(found, instance),
        "cursor": None if last is None else str(last),
    }
