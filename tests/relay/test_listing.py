"""Paging through the registry's live connections (SPEC §9), under churn."""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.relay.registry import IConnection, Registry


@implementer(IConnection)
class _Connection:
    backend_state = None

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.tags: tuple[str, ...] = ()

    def deliver_frame(self, frame: object) -> int:
        from socketdock.relay.registry import NOT_OPEN

        return NOT_OPEN  # a tag send falls back to deliver()

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        return succeed(None)

    def confirm(self, timeout: float) -> Deferred[None]:
        return succeed(None)

    def close(self, code: int, reason: str, initiator: str) -> None:
        pass

    def describe(self) -> dict:
        return {"connection_id": self.connection_id}


def walk(registry: Registry, limit: int, tag=None, between=lambda: None) -> list[str]:
    """Every page from the start; ``between`` runs after each page."""
    seen: list[str] = []
    after = 0
    for _ in range(100000):
        page, cursor = registry.page(after, limit, tag)
        assert len(page) <= limit
        seen += [c.connection_id for c in page]
        between()
        if cursor is None:
            return seen
        after = cursor
    raise AssertionError("the walk did not end")


class ListingTests(SynchronousTestCase):
    def setUp(self):
        self.registry = Registry()
        self.made = 0

    def open(self, *tags: str) -> str:
        self.made += 1
        connection = _Connection(f"{self.made:032x}")
        self.registry.add(connection)
        if tags:
            self.registry.retag(connection.connection_id, tags, ())
        return connection.connection_id

    def test_pages_in_arrival_order(self):
        """Pages follow arrival order; the last page has no cursor; an empty registry is one empty page."""
        self.assertEqual(self.registry.page(0, 10), ([], None))
        ids = [self.open() for _ in range(5)]
        first, after = self.registry.page(0, 2)
        self.assertEqual([c.connection_id for c in first], ids[:2])
        self.assertEqual(walk(self.registry, 2), ids)
        page, after = self.registry.page(0, 5)
        self.assertEqual((len(page), after), (5, None))

    def test_churn_10000_connections_1000_opened_and_closed_while_paging(self):
        """With 10,000 connections and 1,000 opened and closed during the walk, each that stayed up is seen exactly once."""
        rng = random.Random(23)
        stable = [self.open() for _ in range(10000)]
        churners = [self.open() for _ in range(500)]
        opened: list[str] = []

        def churn():
            # Close some earlier churners, open new ones: 1,000 of each in all.
            for _ in range(10):
                if churners:
                    self.registry.discard(churners.pop(rng.randrange(len(churners))))
                if len(opened) < 1000:
                    opened.append(self.open())
                    churners.append(opened[-1])

        seen = walk(self.registry, 100, between=churn)
        self.assertEqual(len(opened), 1000)
        counts: dict[str, int] = {}
        for cid in seen:
            counts[cid] = counts.get(cid, 0) + 1
        self.assertEqual({cid: counts.get(cid) for cid in stable}, dict.fromkeys(stable, 1))
        self.assertEqual(max(counts.values()), 1)

    def test_by_tag(self):
        """A tag's listing holds only its carriers, in arrival order, under the same cursor rule."""
        a = self.open("t")
        self.open("u")
        b = self.open("t", "u")
        c = self.open("t")
        self.assertEqual(walk(self.registry, 1, "t"), [a, b, c])
        page, after = self.registry.page(0, 2, "t")
        assert after is not None
        self.registry.discard(b)
        d = self.open("t")
        rest, _ = self.registry.page(after, 10, "t")
        self.assertEqual([x.connection_id for x in page + rest], [a, b, c, d])
        self.assertEqual(self.registry.page(0, 5, "none"), ([], None))
