"""
Tests for socketdock.ws.timers: one connection's keepalive, lifetime and
confirm pings start when it opens and all stop when it goes, on a task.Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.budget import ByteBudget
from socketdock.relay.confirm import Gone
from socketdock.ws.confirm import token
from socketdock.ws.context import HeaderAllowList
from socketdock.ws.hub import Hub
from socketdock.ws.timers import Timers

NO_GATE: Any = None
NO_METRICS: Any = None


class TimersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pings: list[bytes] = []
        self.dropped: list[bool] = []
        self.closed: list[tuple[int, str]] = []

    def timers(self, **limits: Any) -> Timers:
        hub = Hub(
            reactor=self.clock,
            metrics=NO_METRICS,
            gate=NO_GATE,
            budget=ByteBudget(),
            forward_headers=HeaderAllowList(["*"]),
            max_message_size=100,
            uniform=lambda: 0.5,
            **limits,
        )
        return Timers(
            hub,
            self.pings.append,
            lambda: self.dropped.append(True),
            lambda code, reason: self.closed.append((code, reason)),
            lambda: False,
        )

    def test_nothing_runs_before_open(self) -> None:
        """A pending connection has no timer: no ping, no deadline."""
        self.timers(ping_interval=1, ping_timeout=1, max_lifetime=10, tag_deadline=5)
        self.clock.advance(100)
        self.assertEqual((self.pings, self.closed, self.clock.getDelayedCalls()), ([], [], []))

    def test_open_starts_keepalive_and_deadlines(self) -> None:
        """Once open: pings every interval, a drop when one goes unanswered, and the tag deadline."""
        timers = self.timers(ping_interval=1, ping_timeout=2, tag_deadline=5)
        timers.open()
        self.clock.advance(1)
        self.assertEqual(self.pings, [b"1"])
        timers.pong(b"1")
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertEqual((self.pings, self.dropped), ([b"1", b"2"], [True]))
        self.clock.advance(2)
        self.assertEqual([code for code, _ in self.closed], [1008])

    def test_late_pong_while_not_reading_only_postpones(self) -> None:
        """While the client's data is not read, a late pong postpones the verdict."""
        timers = self.timers(ping_interval=1, ping_timeout=1)
        timers.open()
        timers.reading(False)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.dropped, [])
        timers.reading(True)
        self.clock.advance(1)
        self.assertEqual(self.dropped, [True])

    def test_confirm_before_open_pings_once_open(self) -> None:
        """A confirm asked while pending pings only once the connection opens, and its pong settles it."""
        timers = self.timers()
        d = timers.confirm(10)
        self.clock.advance(0)
        self.assertEqual(self.pings, [])
        timers.open()
        self.clock.advance(0)
        self.assertEqual(self.pings, [token(1)])
        timers.pong(token(1))
        self.assertIsNone(self.successResultOf(d))

    def test_stop_cancels_everything(self) -> None:
        """Once stopped nothing is scheduled, a waiting confirm fails Gone, and so does a new one."""
        timers = self.timers(ping_interval=1, ping_timeout=1, max_lifetime=10, tag_deadline=5)
        timers.open()
        waiting = timers.confirm(10)
        timers.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(waiting, Gone)
        self.failureResultOf(timers.confirm(10), Gone)

    def test_open_after_stop_starts_nothing(self) -> None:
        """A connection that went while its held sends were written starts no timer."""
        timers = self.timers(ping_interval=1, max_lifetime=10)
        timers.stop()
        timers.open()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_confirm_after_stop_fails(self) -> None:
        """A confirm first asked once the connection is gone fails Gone at once, and sends no ping."""
        timers = self.timers()
        timers.open()
        timers.stop()
        self.failureResultOf(timers.confirm(10), Gone)
        self.clock.advance(0)
        self.assertEqual((self.pings, self.clock.getDelayedCalls()), ([], []))
