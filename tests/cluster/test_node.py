"""ClusterNode's own behaviour that needs no Redis."""

from __future__ import annotations

from twisted.internet.defer import fail
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.cluster import parse_cluster_url


class ScriptError(Exception):
    pass


class StopTests(SynchronousTestCase):
    def test_failed_leave_is_logged_readably(self) -> None:
        """A leave that Redis refuses logs its message with the failure."""
        from socketdock.cluster.node import ClusterNode
        from socketdock.cluster.scripts import Names

        address = parse_cluster_url("redis://127.0.0.1:1/0")
        node = ClusterNode(
            address,
            Names.for_db(address.db),
            lambda: "http://me",
            MemoryReactorClock(),
            3600.0,
            lambda ids, details: None,
            lambda channel, data: None,
        )
        # What Redis answers a script it rejects (any error but Unreachable).
        self.patch(node.link, "eval", lambda *args: fail(ScriptError("ERR refused")))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]  # Twisted wants a TestCase; this one has addCleanup too
        self.successResultOf(node.stopService())
        failures = [event for event in events if "log_failure" in event]
        self.assertEqual(
            [formatEvent(event) for event in failures], ["cluster: leaving the cluster failed"]
        )
        failures[0]["log_failure"].trap(ScriptError)
        self.flushLoggedErrors(ScriptError)


class RosterFailureTests(SynchronousTestCase):
    def test_failed_update_is_logged_readably(self) -> None:
        """A Redis update the server refuses is logged with its message and failure."""
        from socketdock.cluster.roster import Roster
        from socketdock.cluster.scripts import Names

        class RefusingLink:
            def eval(self, *args: object):
                return fail(ScriptError("ERR refused"))

        roster = Roster(
            RefusingLink(), Names.for_db(0), lambda: "http://me", 5.0, lambda ids, details: None
        )
        roster._joined = True  # as after a join; joining needs a real Redis
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]  # Twisted wants a TestCase; this one has addCleanup too
        roster.added("c1")
        self.successResultOf(roster.record("c2"))
        failures = [event for event in events if "log_failure" in event]
        self.assertEqual(
            [formatEvent(event) for event in failures],
            ["cluster: a Redis update failed"] * 2,
        )
        self.flushLoggedErrors(ScriptError)
