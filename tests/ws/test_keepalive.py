"""Tests for socketdock.ws.keepalive: pings on the reactor's clock, exact to the fraction."""

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.keepalive import Keepalive
from tests.test_end_to_end import RelayTestCase


class KeepaliveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pings: list[bytes] = []
        self.dropped: list[bool] = []
        self.keepalive = Keepalive(
            self.clock, 0.5, 0.2, self.pings.append, lambda: self.dropped.append(True)
        )
        self.keepalive.start()

    def test_pings_at_fractional_intervals(self) -> None:
        """A 0.5 s interval pings at 0.5 s, not sooner (Autobahn's timers would)."""
        self.clock.advance(0.49)
        self.assertEqual(self.pings, [])
        self.clock.advance(0.01)
        self.assertEqual(self.pings, [b"1"])

    def test_pong_keeps_the_peer(self) -> None:
        """An answering pong schedules the next ping and nobody is dropped."""
        self.clock.advance(0.5)
        self.keepalive.pong(b"1")
        self.clock.advance(0.5)
        self.assertEqual(self.pings, [b"1", b"2"])
        self.assertEqual(self.dropped, [])

    def test_late_pong_drops_the_peer(self) -> None:
        """No pong within the timeout drops the peer once."""
        self.clock.advance(0.5)
        self.clock.advance(0.19)
        self.assertEqual(self.dropped, [])
        self.clock.advance(0.01)
        self.assertEqual(self.dropped, [True])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unrelated_pong_is_ignored(self) -> None:
        """A pong that does not echo our ping's payload does not count."""
        self.clock.advance(0.5)
        self.keepalive.pong(b"other")
        self.clock.advance(0.2)
        self.assertEqual(self.dropped, [True])

    def test_not_reading_postpones_the_verdict(self) -> None:
        """While the peer is not read (backpressure) a missing pong is not held against it."""
        self.clock.advance(0.5)
        self.keepalive.reading(False)
        self.clock.advance(1.0)
        self.assertEqual(self.dropped, [])
        self.keepalive.reading(True)
        self.keepalive.pong(b"1")
        self.clock.advance(0.5)
        self.assertEqual(self.pings, [b"1", b"2"])

    def test_stop_cancels(self) -> None:
        """After stop nothing is scheduled."""
        self.keepalive.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zero_interval_never_pings(self) -> None:
        """ping_interval 0 turns pings off."""
        keepalive = Keepalive(self.clock, 0, 0, self.pings.append, lambda: None)
        self.keepalive.stop()
        keepalive.start()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PingTimeoutEndToEndTests(RelayTestCase):
    @inlineCallbacks
    def test_client_that_stops_answering_is_dropped(self):
        """A client that stops reading misses its pong and is dropped: code null, initiator client."""
        yield self.start(ping_interval=0.2, ping_timeout=0.2)
        client = yield self.client()
        client.send_text("hi")
        yield self.backend.wait_for("message", 1)
        client.protocol.transport.pauseProducing()
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertIsNone(notice["meta"]["code"])
        self.assertEqual(notice["meta"]["initiator"], "client")
        # Reading again, the client sees the drop (no close frame).
        client.protocol.transport.resumeProducing()
        _, code, _ = yield client.closed
        self.assertIsNone(code)

    @inlineCallbacks
    def test_answering_client_stays(self):
        """
        A client that answers sub-second pings keeps its connection and its messages
        flow, for many more pings than fit in one ping_timeout: its pongs count.
        """
        # The timeout is 20 intervals, not one: an overloaded machine may not run
        # this process for a while between a ping and the read of its pong, and then
        # the pending timer fires first (Twisted runs timers before reading).
        yield self.start(ping_interval=0.05, ping_timeout=1)
        client = yield self.client()
        for n in range(5):
            client.send_text(f"m{n}")
            yield self.backend.wait_for("message", n + 1)
            yield client.ping()
        # 40 pings take at least 2 s: twice the timeout that unmatched pongs would hit.
        yield client.pinged(40)
        client.send_text("still here")
        yield self.backend.wait_for("message", 6)
        self.assertEqual(self.backend.disconnects, [])
