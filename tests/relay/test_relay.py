"""Unit tests for socketdock.relay.session: ordering, backpressure, notices and drain, with fakes."""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import IBackend, MessageRefused, Reply
from socketdock.relay.registry import Registry
from socketdock.relay.retry import RetriesExhausted
from socketdock.relay.session import ISocket, Relay


@implementer(IBackend)
class ScriptedBackend:
    """Each message waits for the test to answer it; notices are recorded."""

    admits = False

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, bytes, bool, Deferred, tuple[str, ...]]] = []
        self.notices: list[tuple] = []
        self.notice_tags: list = []
        self.notice_results: list[Deferred] = []

    def connect(self, connection_id, headers, offered, context=None):
        return succeed(None)

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        d: Deferred = Deferred()
        self.messages.append((connection_id, seq, payload, is_binary, d, tags))
        return d

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        self.notices.append((connection_id, code, reason, initiator))
        self.notice_tags.append(tags)
        d: Deferred = Deferred()
        self.notice_results.append(d)
        return d


@implementer(ISocket)
class FakeSocket:
    """Records what the relay asked of the client side."""

    def __init__(self, connection_id: str = "a" * 32) -> None:
        self.connection_id = connection_id
        self.sent: list[tuple[bytes, bool]] = []
        self.tags: tuple[str, ...] = ()
        self.closed: tuple[int, str, str] | None = None
        self.paused = False

    backend_state = None  # the backend's state (SPEC §9), never set here

    def confirm(self, timeout: float) -> Deferred[None]:
        return Deferred()  # never confirmed: these tests do not ask

    def deliver_frame(self, frame: object) -> int:
        from socketdock.relay.registry import NOT_OPEN

        return NOT_OPEN  # a tag send falls back to deliver()

    def deliver(self, payload, is_binary):
        self.sent.append((payload, is_binary))
        return succeed(None)

    def close(self, code, reason, initiator):
        self.closed = (code, reason, initiator)

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def describe(self):
        return {}


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = ScriptedBackend()
        self.registry = Registry()
        self.relay = Relay(
            self.backend,
            self.registry,
            Metrics(active=self.registry.__len__, queued=lambda: self.relay.queued()),
            self.clock,
            queue_limit=3,
        )
        self.socket = FakeSocket()
        self.session = self.relay.open_session(self.socket.connection_id, self.socket)

    def test_one_message_in_flight_in_order(self) -> None:
        """The second message goes to the backend only after the first is answered."""
        self.session.received(b"1", False)
        self.session.received(b"2", True)
        self.assertEqual([m[1] for m in self.backend.messages], [1])
        self.backend.messages[0][4].callback(None)
        self.assertEqual(
            [(m[1], m[2], m[3]) for m in self.backend.messages], [(1, b"1", False), (2, b"2", True)]
        )

    def test_reading_pauses_at_queue_limit_and_resumes(self) -> None:
        """At queue_limit waiting messages reading stops; it resumes once below."""
        for n in range(3):
            self.session.received(b"%d" % n, False)
        self.assertTrue(self.socket.paused)
        self.assertEqual(len(self.session), 3)
        self.backend.messages[0][4].callback(None)
        self.assertFalse(self.socket.paused)

    def test_reply_goes_to_the_client(self) -> None:
        """A reply from the backend (loopback, inline_reply) is delivered to the socket."""
        self.session.received(b"ping", False)
        self.backend.messages[0][4].callback(Reply(b"pong", True))
        self.assertEqual(self.socket.sent, [(b"pong", True)])

    def test_refused_message_keeps_connection_open(self) -> None:
        """A final 4xx is logged and the next message still flows."""
        self.session.received(b"bad", False)
        self.session.received(b"good", False)
        self.backend.messages[0][4].errback(MessageRefused(400))
        self.assertIsNone(self.socket.closed)
        self.assertEqual(len(self.backend.messages), 2)
        self.flushLoggedErrors()

    def test_exhausted_retries_close_with_1011_and_drop_the_rest(self) -> None:
        """Retries used up: close 1011 as backend, later messages are not sent out of order."""
        self.session.received(b"1", False)
        self.session.received(b"2", False)
        self.backend.messages[0][4].errback(RetriesExhausted("HTTP 503", 6))
        self.assertEqual(self.socket.closed, (1011, "backend unavailable", "backend"))
        self.session.ended(1011, "backend unavailable", "backend")
        self.assertEqual(len(self.backend.messages), 1)
        self.assertEqual(self.backend.notices, [("a" * 32, 1011, "backend unavailable", "backend")])

    def test_notice_waits_for_earlier_messages(self) -> None:
        """The disconnect notice goes out only after the queued messages."""
        self.session.received(b"1", False)
        self.session.ended(1000, "", "client")
        self.assertEqual(self.backend.notices, [])
        self.backend.messages[0][4].callback(None)
        self.assertEqual(self.backend.notices, [("a" * 32, 1000, "", "client")])

    def test_ended_twice_sends_one_notice(self) -> None:
        """A second end report does not send a second notice."""
        self.session.ended(None, "", "client")
        self.session.ended(1000, "", "client")
        self.assertEqual(len(self.backend.notices), 1)

    def test_drain_closes_with_1001_and_waits_for_notices(self) -> None:
        """drain closes live connections with 1001 and fires once notices are delivered."""
        self.registry.add(self.socket)
        d = self.relay.drain(10)
        self.assertTrue(self.relay.draining)
        self.assertEqual(self.socket.closed, (1001, "server shutting down", "server"))
        self.session.ended(1001, "server shutting down", "server")
        self.assertNoResult(d)
        self.backend.notice_results[0].callback(None)
        self.assertEqual(self.successResultOf(d), 0)

    def test_drain_gives_up_at_the_timeout(self) -> None:
        """With the backend silent, drain fires at the timeout with the undelivered count."""
        self.session.ended(None, "", "client")
        d = self.relay.drain(2.5)
        self.clock.advance(2.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 1)

    def test_messages_carry_the_tags_they_have_when_posted(self) -> None:
        """Each message goes out with the socket's tags at the time it is POSTed; the notice with the last."""
        self.session.received(b"1", False)
        self.session.received(b"2", False)
        self.socket.tags = ("x",)
        self.backend.messages[0][4].callback(None)
        self.assertEqual([m[5] for m in self.backend.messages], [(), ("x",)])
        self.socket.tags = ("x", "y")
        self.backend.messages[1][4].callback(None)
        self.session.ended(1000, "", "client")
        self.assertEqual(self.backend.notice_tags, [("x", "y")])

    def test_untagged_notice_has_no_tags(self) -> None:
        """An untagged connection's notice is asked for exactly as before (no tags argument)."""
        self.session.ended(1000, "", "client")
        self.assertEqual(self.backend.notice_tags, [()])

    def test_orphan_notice_carries_its_tags(self) -> None:
        """An admitted client that left during its handshake is noticed with the tags it was given."""
        self.relay.orphan("b" * 32, "client left during the handshake", "client", ("t",))
        self.assertEqual(self.backend.notice_tags[-1], ("t",))

    def test_orphan_gets_a_notice(self) -> None:
        """An admitted client that left during its handshake still gets a notice."""
        self.relay.orphan("b" * 32, "client left during the handshake", "client")
        self.assertEqual(
            self.backend.notices[-1], ("b" * 32, None, "client left during the handshake", "client")
        )
        self.assertEqual(self.relay.unfinished(), 2)


class RegistryTests(SynchronousTestCase):
    def test_add_get_discard(self) -> None:
        """Registered connections are found by id until discarded."""
        registry = Registry()
        a, b = FakeSocket("a" * 32), FakeSocket("b" * 32)
        registry.add(a)
        registry.add(b)
        self.assertIs(registry.get("a" * 32), a)
        registry.discard("a" * 32)
        registry.discard("a" * 32)
        self.assertIsNone(registry.get("a" * 32))
        self.assertEqual(len(registry), 1)
        self.assertEqual(list(registry), [b])


class RecoverReasonTests(SynchronousTestCase):
    def test_reason_of_recovered_notices(self) -> None:
        """recover() says the instance restarted by default, and takes the cluster's "instance lost"."""
        from socketdock.relay.session import LOST_INSTANCE_REASON, RECOVERED_REASON

        backend = ScriptedBackend()
        registry = Registry()
        relay = Relay(backend, registry, Metrics(active=lambda: 0, queued=lambda: 0), Clock(), 3)
        relay.recover(["a" * 32])
        relay.recover(["b" * 32], reason=LOST_INSTANCE_REASON)
        self.assertEqual(
            [n[1:] for n in backend.notices],
            [(None, RECOVERED_REASON, "server"), (None, LOST_INSTANCE_REASON, "server")],
        )
        self.assertIn("lost", LOST_INSTANCE_REASON)
        self.assertNotIn("restart", LOST_INSTANCE_REASON)
