"""
Tests for the tag rules (socketdock.relay.tags), the registry's tag index
and the local IReach over it (socketdock.relay.localreach).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import IConnectionEvents, InvalidTags, IReach, NoEvents, Reached
from socketdock.relay.registry import (
    NOT_OPEN,
    SENT,
    IConnection,
    NotLive,
    OutboundFull,
    Registry,
    SharedFrame,
)
from socketdock.relay.tags import (
    MAX_TAGS,
    check_tag,
    check_tag_list,
    merged,
    tag_from_path,
)


class TagRuleTests(SynchronousTestCase):
    def test_valid_tags(self) -> None:
        """1 to 200 bytes of UTF-8 without control characters pass, '/' and spaces included."""
        for tag in ["a", "did:peer:2.Ez6LS/x y", "é" * 100, "x" * 200, "🙂" * 50]:
            self.assertEqual(check_tag(tag), tag)

    def test_length_counts_bytes(self) -> None:
        """Empty, 201 ASCII bytes and 101 two-byte characters (202 bytes) are refused."""
        for tag in ["", "x" * 201, "é" * 101]:
            with self.assertRaises(InvalidTags) as caught:
                check_tag(tag)
            self.assertIn("1-200 bytes", str(caught.exception))

    def test_control_characters_refused(self) -> None:
        """NUL, newline, DEL and a C1 control are refused, with a one-line reason."""
        for tag in ["a\x00", "a\nb", "\x7f", "a\x85"]:
            with self.assertRaises(InvalidTags) as caught:
                check_tag(tag)
            self.assertNotIn("\n", str(caught.exception))

    def test_not_a_string_or_not_utf8(self) -> None:
        """A number and a lone surrogate (as JSON can carry) are refused."""
        for tag in [7, None, "\ud800"]:
            self.assertRaises(InvalidTags, check_tag, tag)

    def test_path_segment(self) -> None:
        """A decoded path segment is a tag when it is UTF-8; '/' stays inside it."""
        self.assertEqual(tag_from_path("a/b é".encode()), "a/b é")
        self.assertRaises(InvalidTags, tag_from_path, b"\xff")
        self.assertRaises(InvalidTags, tag_from_path, b"")

    def test_lists(self) -> None:
        """A list is de-duplicated in first-seen order; a non-list or over 64 is refused."""
        self.assertEqual(check_tag_list(["b", "a", "b"], "add"), ("b", "a"))
        self.assertRaises(InvalidTags, check_tag_list, "a", "add")
        self.assertRaises(InvalidTags, check_tag_list, [str(i) for i in range(MAX_TAGS + 1)], "add")
        self.assertEqual(len(check_tag_list([str(i) for i in range(MAX_TAGS)], "add")), MAX_TAGS)

    def test_merged(self) -> None:
        """Removals go first, additions keep first-added order, and the limit holds."""
        self.assertEqual(merged(("a", "b"), ("c", "a"), ("a",)), ("b", "c", "a"))
        self.assertEqual(merged(("a",), (), ("zz",)), ("a",))
        full = tuple(str(i) for i in range(MAX_TAGS))
        self.assertRaises(InvalidTags, merged, full, ("new",), ())
        self.assertEqual(len(merged(full, ("new",), ("0",))), MAX_TAGS)


@implementer(IConnection)
class FakeConnection:
    """A live connection that records deliveries and closes; deliveries answer as told."""

    def __init__(self, connection_id: str, answer: Callable[[], Deferred] | None = None) -> None:
        self.connection_id = connection_id
        self.tags: tuple[str, ...] = ()
        self.delivered: list[tuple[bytes, bool]] = []
        self.closed: list[tuple[int, str, str]] = []
        self._answer = answer

    backend_state = None  # the backend's state (SPEC §9), never set here

    def confirm(self, timeout: float) -> Deferred[None]:
        return Deferred()  # never confirmed: these tests do not ask

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        self.delivered.append((payload, is_binary))
        return succeed(None) if self._answer is None else self._answer()

    def deliver_frame(self, frame: SharedFrame) -> int:
        if self._answer is not None:
            return NOT_OPEN  # pending or slow: the tag send falls back to deliver()
        self.delivered.append((frame.payload, frame.is_binary))
        return SENT

    def close(self, code: int, reason: str, initiator: str) -> None:
        self.closed.append((code, reason, initiator))

    def describe(self) -> dict:
        return {}


@implementer(IConnectionEvents)
class RecordedEvents:
    """Records every hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def connection_added(self, connection_id):
        self.calls.append(("added", connection_id))

    def tags_changed(self, connection_id, added, removed):
        self.calls.append(("changed", connection_id, list(added), list(removed)))

    def connection_gone(self, connection_id, tags):
        self.calls.append(("gone", connection_id, list(tags)))


A, B, C = "a" * 32, "b" * 32, "c" * 32


class RegistryIndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = RecordedEvents()
        self.registry = Registry(self.events)
        self.a, self.b = FakeConnection(A), FakeConnection(B)
        self.registry.add(self.a)
        self.registry.add(self.b)

    def test_retag_indexes_and_answers(self) -> None:
        """Retagging sets the connection's tags and finds it under each one."""
        self.assertEqual(self.registry.retag(A, ["x", "y"], []), ("x", "y"))
        self.registry.retag(B, ["y"], [])
        self.assertEqual(self.a.tags, ("x", "y"))
        self.assertEqual(self.registry.tagged("x"), [self.a])
        self.assertEqual({c.connection_id for c in self.registry.tagged("y")}, {A, B})
        self.assertEqual(self.registry.tagged("z"), [])
        self.assertEqual((self.registry.carriers("y"), self.registry.carriers("z")), (2, 0))

    def test_removal_leaves_the_index(self) -> None:
        """A removed tag no longer finds the connection, and an emptied tag is forgotten."""
        self.registry.retag(A, ["x", "y"], [])
        self.assertEqual(self.registry.retag(A, [], ["x"]), ("y",))
        self.assertEqual(self.registry.tagged("x"), [])
        self.assertEqual(self.registry.tag_count(), 1)

    def test_discard_leaves_every_index(self) -> None:
        """A connection that stops being live leaves every tag; the index is empty after all go."""
        self.registry.retag(A, ["x", "y"], [])
        self.registry.retag(B, ["y"], [])
        self.registry.discard(A)
        self.assertEqual(self.registry.tagged("x"), [])
        self.assertEqual(self.registry.tagged("y"), [self.b])
        self.assertEqual(self.a.tags, ("x", "y"), "kept for the disconnect notice")
        self.registry.discard(B)
        self.registry.discard(B)
        self.assertEqual(self.registry.tag_count(), 0)

    def test_retag_not_live(self) -> None:
        """Retagging a connection that is gone raises NotLive."""
        self.registry.discard(A)
        self.assertRaises(NotLive, self.registry.retag, A, ["x"], [])
        self.assertRaises(NotLive, self.registry.retag, C, ["x"], [])

    def test_over_the_limit_changes_nothing(self) -> None:
        """A change that would pass 64 tags is refused whole."""
        self.registry.retag(A, [str(i) for i in range(MAX_TAGS)], [])
        self.assertRaises(InvalidTags, self.registry.retag, A, ["new"], [])
        self.assertEqual(len(self.a.tags), MAX_TAGS)
        self.assertEqual(self.registry.tagged("new"), [])

    def test_events(self) -> None:
        """The hooks hear opens, actual tag changes only, and the tags a gone connection had."""
        self.registry.retag(A, ["x"], [])
        self.registry.retag(A, ["x"], [])
        self.registry.retag(A, ["y"], ["x"])
        self.registry.discard(A)
        self.registry.discard(A)
        self.assertEqual(
            self.events.calls,
            [
                ("added", A),
                ("added", B),
                ("changed", A, ["x"], []),
                ("changed", A, ["y"], ["x"]),
                ("gone", A, ["y"]),
            ],
        )

    def test_no_events_provides_the_interface(self) -> None:
        """The default hooks satisfy IConnectionEvents."""
        self.assertTrue(verifyObject(IConnectionEvents, NoEvents()))


class LocalReachTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = Registry()
        self.reach = LocalReach(self.registry)

    def add(self, connection_id: str, tags, answer=None) -> FakeConnection:
        connection = FakeConnection(connection_id, answer)
        self.registry.add(connection)
        self.registry.retag(connection_id, tags, [])
        return connection

    def test_provides_ireach(self) -> None:
        """LocalReach implements every IReach method."""
        self.assertTrue(verifyObject(IReach, self.reach))

    def test_send_to_tag_reaches_every_carrier(self) -> None:
        """A tag send hands the frame to each carrier and counts them; others get nothing."""
        a, b, c = self.add(A, ["t"]), self.add(B, ["t", "u"]), self.add(C, ["u"])
        reached = self.successResultOf(self.reach.send_to_tag("t", b"hi", False))
        self.assertEqual(reached, Reached(connections=2))
        self.assertEqual((a.delivered, b.delivered, c.delivered), ([(b"hi", False)],) * 2 + ([],))

    def test_send_to_nobody(self) -> None:
        """A tag nobody carries reaches nobody."""
        self.assertTrue(self.successResultOf(self.reach.send_to_tag("t", b"x", True)).none)
        self.assertTrue(self.successResultOf(self.reach.count_tag("t")).none)

    def test_full_clients_are_counted_apart(self) -> None:
        """A slow reader is skipped and counted as full; the others still get the frame."""
        self.add(A, ["t"])
        self.add(B, ["t"], answer=lambda: fail(OutboundFull()))
        reached = self.successResultOf(self.reach.send_to_tag("t", b"x", True))
        self.assertEqual(reached, Reached(connections=1, full=1))
        self.assertEqual(reached.as_json(), {"connections": 1, "full": 1})

    def test_held_delivery_counts(self) -> None:
        """A connection still in its handshake counts as reached; its later loss is absorbed."""
        held: Deferred = Deferred()
        self.add(A, ["t"], answer=lambda: held)
        reached = self.successResultOf(self.reach.send_to_tag("t", b"x", True))
        self.assertEqual(reached.connections, 1)
        held.errback(NotLive())  # logged, not left unhandled
        self.assertIsNone(self.successResultOf(held))

    def test_close_and_count(self) -> None:
        """close_tag closes every carrier as the backend; count_tag counts them."""
        a, b = self.add(A, ["t"]), self.add(B, ["t"])
        self.assertEqual(self.successResultOf(self.reach.count_tag("t")).connections, 2)
        self.assertEqual(
            self.successResultOf(self.reach.close_tag("t", 4000, "bye")).connections, 2
        )
        self.assertEqual(a.closed, [(4000, "bye", "backend")])
        self.assertEqual(b.closed, [(4000, "bye", "backend")])

    def test_change_tags(self) -> None:
        """change_tags answers the tags now; unknown ids fail NotLive, overfull InvalidTags."""
        self.add(A, [])
        self.assertEqual(
            self.successResultOf(self.reach.change_tags(A, ["x", "y"], [])), ("x", "y")
        )
        self.assertEqual(self.successResultOf(self.reach.change_tags(A, [], ["x"])), ("y",))
        self.failureResultOf(self.reach.change_tags(B, ["x"], []), NotLive)
        too_many = [str(i) for i in range(MAX_TAGS)]
        self.failureResultOf(self.reach.change_tags(A, too_many, []), InvalidTags)

    def test_connection_routes(self) -> None:
        """send_to_connection and close_connection reach one live id, or fail NotLive."""
        a = self.add(A, [])
        self.successResultOf(self.reach.send_to_connection(A, b"x", False))
        self.successResultOf(self.reach.close_connection(A, 1000, ""))
        self.assertEqual((a.delivered, a.closed), ([(b"x", False)], [(1000, "", "backend")]))
        self.failureResultOf(self.reach.send_to_connection(B, b"x", False), NotLive)
        self.failureResultOf(self.reach.close_connection(B, 1000, ""), NotLive)
        self.assertEqual(self.successResultOf(self.reach.describe_connection(A)), {})
        self.failureResultOf(self.reach.describe_connection(B), NotLive)
