"""ClusterNode's own behaviour that needs no Redis."""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
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


class ServeTests(SynchronousTestCase):
    """What a served node hands to the relay and the reach."""

    def setUp(self) -> None:
        from socketdock.cluster.node import ClusterNode
        from socketdock.cluster.scripts import Names
        from tests.cluster.fakes import NoTagRequests

        address = parse_cluster_url("redis://127.0.0.1:1/0")
        self.node = ClusterNode(
            address, Names.for_db(address.db), lambda: "http://me", MemoryReactorClock(), 3600.0
        )
        self.recovered: list[tuple] = []
        self.taken: list[str] = []
        self.reach = NoTagRequests()

    def serve(self) -> None:
        self.node.serve(
            lambda ids, details, reason: self.recovered.append((ids, details, reason)),
            self.reach,
            self.taken.append,
        )

    def test_claims_are_recovered_as_a_lost_instance(self) -> None:
        """Connections a heartbeat claims go to recover, with the lost-instance reason."""
        from socketdock.relay.session import LOST_INSTANCE_REASON

        self.serve()
        # A heartbeat's answer: still alive, and one claimed connection of a lost instance.
        claim = [1, [b"http://lost", b"c1", b'{"tags":["t"]}']]
        self.patch(self.node.link, "eval", lambda *args: succeed(claim))
        self.node.roster._joined = True  # as after a join; joining needs a Redis
        self.successResultOf(self.node.roster.beat())
        self.assertEqual(self.recovered, [(["c1"], {"c1": '{"tags":["t"]}'}, LOST_INSTANCE_REASON)])

    def test_tag_requests_go_to_the_reach(self) -> None:
        """A message on the link reaches the reach the node serves, directly."""
        self.serve()
        got: list[tuple[bytes, bytes]] = []
        self.patch(self.reach, "message", lambda channel, data: got.append((channel, data)))
        self.node.message(b"socketdock:0:tag:t", b"{}")
        self.assertEqual(got, [(b"socketdock:0:tag:t", b"{}")])

    def test_status_counts_the_reach_drops(self) -> None:
        """``messages_dropped`` in /status is the served reach's count."""
        self.assertEqual(self.node.status()["messages_dropped"], 0)
        self.serve()
        self.reach.dropped = 3
        self.assertEqual(self.node.status()["messages_dropped"], 3)

    def test_an_unserved_node_does_not_start(self) -> None:
        """Starting before serve() is a wiring mistake, caught at once."""
        self.assertRaises(AssertionError, self.node.startService)
        self.assertFalse(self.node.link.running)


class AssemblyTests(SynchronousTestCase):
    """Cluster mode as make_service assembles it, with no Redis: nothing connects until a start."""

    def test_served_cluster_routes_tag_channel_junk_to_its_reach(self) -> None:
        """link -> node -> reach: junk on a tag channel is counted in /status, once served."""
        from socketdock.cluster.wiring import Cluster
        from socketdock.config.settings import load_config, secrets_of
        from socketdock.relay.registry import Registry
        from socketdock.relay.wire import CallbackURLs

        config = load_config({"cluster": "redis://127.0.0.1:1/3"}, {}, None)
        reactor = MemoryReactorClock()
        cluster = Cluster(config, reactor, CallbackURLs("127.0.0.1:8765"), secrets_of(config))
        reach = cluster.serve(Registry(cluster.events), lambda ids, d, why: None, lambda line: None)
        cluster.node.message(b"socketdock:3:tag:dGFn", b"not a tag request")
        self.assertEqual(reach.dropped, 1)
        self.assertEqual(cluster.status()["messages_dropped"], 1)
        self.assertEqual(reactor.tcpClients, [])
