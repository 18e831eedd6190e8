"""
The roster's records and the claim of a lost instance, against a real Redis:
heartbeats are called by the test (the nodes' own timer is set far off), so
the race between two survivors is made on purpose, in one reactor turn.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from socketdock.config.cluster import parse_cluster_url
from tests.cluster.fakes import NoTagRequests
from tests.cluster.redisserver import NO_REDIS, start_redis

#: Far longer than any test: heartbeats only happen when a test calls beat().
FAR = 3600.0


class Node:
    """A ClusterNode and the ids it was asked to recover."""

    def __init__(self, testcase, address, me: str, clock=None, taken=None) -> None:
        from socketdock.cluster.node import ClusterNode
        from socketdock.cluster.scripts import Names

        self.recovered: list[list[str]] = []
        self.node = ClusterNode(
            address,
            Names.for_db(address.db),
            lambda: me,
            reactor,
            FAR,
            retry_policy=lambda attempt: 0.05,
            clock=clock,
        )
        self.node.serve(
            lambda ids, details, reason: self.recovered.append(ids),
            NoTagRequests(),
            taken or (lambda line: None),
        )
        self.roster = self.node.roster
        # The link only: the node's heartbeat timer stays off, beats are the test's.
        self.node.link.startService()
        testcase.addCleanup(self.crash)

    def crash(self):
        """Stop without leaving: the records stay in Redis, as after SIGKILL."""
        if self.node.link.running:
            return self.node.link.stopService()
        return None


class RosterTests(TestCase):
    """Records, heartbeats and claims with three nodes on one Redis."""

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.redis = yield start_redis(self, reactor)
        self.address = parse_cluster_url(self.redis.url(db=2))

    @inlineCallbacks
    def node(self, me: str):
        node = Node(self, self.address, me)
        yield node.node.link.when_up()
        return node

    def command(self, node, *args):
        return node.node.link.command(*args)

    @inlineCallbacks
    def owed(self, via, me: str):
        members = yield self.command(via, "SMEMBERS", f"socketdock:2:owed:{me}".encode())
        return sorted(m.decode() for m in members)

    @inlineCallbacks
    def test_two_survivors_race_one_claims(self):
        """Two survivors beating at once after a heartbeat lapsed: exactly one claims every owed id."""
        lost = yield self.node("http://lost")
        ids = ["a" * 32, "b" * 32, "c" * 32]
        for cid in ids:
            lost.roster.added(cid)
            lost.roster.record(cid)
        lost.roster.gone(ids[2])  # closed; its notice still owed
        y = yield self.node("http://y")
        z = yield self.node("http://z")
        self.assertEqual((yield self.owed(y, "http://lost")), ids)
        yield lost.crash()
        # Nobody claims while the heartbeat lives.
        yield gatherResults([y.roster.beat(), z.roster.beat()])
        self.assertEqual(y.recovered + z.recovered, [])
        yield self.command(y, "DEL", b"socketdock:2:alive:http://lost")  # the TTL ran out
        yield gatherResults([y.roster.beat(), z.roster.beat()])
        claims = y.recovered + z.recovered
        self.assertEqual(len(claims), 1, claims)
        self.assertEqual(sorted(claims[0]), ids)
        winner = y if y.recovered else z
        self.assertEqual((yield self.owed(y, winner.roster.me)), ids)
        self.assertEqual((yield self.owed(y, "http://lost")), [])
        self.assertIsNone((yield self.command(y, "HGET", b"socketdock:2:where", ids[0].encode())))
        # Later beats claim nothing more; delivered notices are forgotten.
        yield gatherResults([y.roster.beat(), z.roster.beat()])
        self.assertEqual(len(y.recovered + z.recovered), 1)
        for cid in ids:
            winner.roster.forget(cid)
        yield winner.roster.settled()
        self.assertEqual((yield self.owed(y, winner.roster.me)), [])

    @inlineCallbacks
    def test_record_fires_once_redis_has_it(self):
        """record() fires once the owed id is in Redis; with the link down, at once."""
        node = yield self.node("http://r")
        yield node.roster.record("i" * 32)
        self.assertEqual((yield self.owed(node, "http://r")), ["i" * 32])
        yield node.crash()
        node.roster.lost_link()
        self.successResultOf(node.roster.record("j" * 32))

    @inlineCallbacks
    def test_restart_before_anyone_claims(self):
        """An instance restarted under the same name sends its last run's owed notices itself."""
        first = yield self.node("http://x")
        first.roster.record("d" * 32)
        first.roster.record("e" * 32)
        first.roster.forget("e" * 32)
        # Its heartbeat lapses (see SameNameTests for a restart before that).
        yield self.command(first, "DEL", b"socketdock:2:alive:http://x")
        yield first.crash()
        second = yield self.node("http://x")
        self.assertEqual(second.recovered, [["d" * 32]])
        self.assertEqual((yield self.owed(second, "http://x")), ["d" * 32])
        # Its beats keep it alive; it claims nothing from itself.
        yield second.roster.beat()
        self.assertEqual(second.recovered, [["d" * 32]])

    @inlineCallbacks
    def test_claimed_before_restart(self):
        """Claimed by a survivor first: the restarted instance sends none of them again."""
        first = yield self.node("http://x")
        first.roster.record("f" * 32)
        survivor = yield self.node("http://s")
        yield first.crash()
        yield self.command(survivor, "DEL", b"socketdock:2:alive:http://x")
        yield survivor.roster.beat()
        self.assertEqual(survivor.recovered, [["f" * 32]])
        second = yield self.node("http://x")
        self.assertEqual(second.recovered, [])

    @inlineCallbacks
    def test_clean_leave(self):
        """A clean stop leaves no record, and a later beat claims nothing."""
        leaving = yield self.node("http://leaving")
        leaving.roster.added("g" * 32)
        other = yield self.node("http://other")
        yield leaving.node.stopService()
        members = yield self.command(other, "SMEMBERS", b"socketdock:2:instances")
        self.assertEqual(members, [b"http://other"])
        self.assertIsNone((yield self.command(other, "HGET", b"socketdock:2:where", b"g" * 32)))
        yield other.roster.beat()
        self.assertEqual(other.recovered, [])


class ClockedHeartbeatTests(TestCase):
    """The node's own heartbeat, timed by a Clock: beats renew, and a lapsed instance is claimed."""

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def test_heartbeat_on_the_clock(self):
        """Each interval of the Clock beats once; the beat after a lapse claims the lost notices."""
        from twisted.internet.task import Clock

        from socketdock.cluster.node import ClusterNode
        from socketdock.cluster.scripts import Names

        redis = yield start_redis(self, reactor)
        address = parse_cluster_url(redis.url(db=4))
        lost = Node(self, address, "http://lost")
        yield lost.node.link.when_up()
        lost.roster.record("h" * 32)
        yield lost.crash()

        clock = Clock()
        claimed: Deferred = Deferred()
        node = ClusterNode(
            address,
            Names.for_db(4),
            lambda: "http://survivor",
            reactor,
            5.0,
            retry_policy=lambda attempt: 0.05,
            clock=clock,
        )
        node.serve(
            lambda ids, details, reason: claimed.callback(ids), NoTagRequests(), lambda line: None
        )
        node.startService()
        self.addCleanup(node.stopService)
        yield node.link.when_up()
        ttl = yield node.link.command("PTTL", b"socketdock:4:alive:http://survivor")
        self.assertTrue(10_000 < ttl <= 15_000, ttl)  # three beats of 5 s, just set
        yield node.link.command("DEL", b"socketdock:4:alive:http://lost")
        clock.advance(4.9)
        # A beat sent now would be answered before this round trip is.
        yield node.link.command("PING")
        self.assertFalse(claimed.called)
        clock.advance(0.1)
        self.assertEqual((yield claimed), ["h" * 32])


class RefusedChangesTests(TestCase):
    """Changes Redis refuses with the link up are rewritten until they land (timed by a Clock)."""

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        from twisted.internet.task import Clock
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        redis = yield start_redis(self, reactor)
        self.clock = Clock()
        self.node = Node(self, parse_cluster_url(redis.url(db=5)), "http://n", self.clock)
        self.link = self.node.node.link
        yield self.link.when_up()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self, words: str) -> list:
        from twisted.logger import formatEvent

        return [e for e in self.events if words in formatEvent(e)]

    @inlineCallbacks
    def records(self):
        """What Redis holds for the node: live ids, owed ids, where the first id is."""
        live = yield self.link.command("SMEMBERS", b"socketdock:5:live:http://n")
        owed = yield self.link.command("SMEMBERS", b"socketdock:5:owed:http://n")
        return len(live), len(owed)

    @inlineCallbacks
    def open_twenty(self):
        ids = [f"{i:032x}" for i in range(20)]
        for cid in ids:
            self.node.roster.added(cid)
            # Refused, record() still fires: a handshake is not held up.
            yield self.node.roster.record(cid)
        return ids

    @inlineCallbacks
    def test_out_of_memory(self):
        """Out of memory: 20 handshakes' changes are refused with one warning each from the link and the roster; the rewrite lands them; room again is said once."""
        yield self.link.command("CONFIG", "SET", "maxmemory", "1")
        ids = yield self.open_twenty()
        self.assertEqual((yield self.records()), (0, 0))
        self.assertEqual(len(self.lines("refuses this instance's changes")), 1)
        self.assertEqual(len(self.lines("refused a command")), 1)
        from socketdock.cluster.roster import REWRITE_DELAY

        self.clock.advance(REWRITE_DELAY)
        yield self.link.command("PING")  # answered after the rewrite
        self.assertEqual((yield self.records()), (20, 20))
        where = yield self.link.command("HGET", b"socketdock:5:where", ids[-1].encode())
        self.assertEqual(where, b"http://n")
        yield self.link.command("CONFIG", "SET", "maxmemory", "0")
        self.node.roster.gone(ids[0])
        yield self.link.command("PING")
        self.assertEqual((yield self.records()), (19, 20))
        self.assertEqual(len(self.lines("takes this instance's changes again")), 1)
        self.assertEqual(len(self.lines("refuses this instance's changes")), 1)
        self.assertEqual([e for e in self.events if "log_failure" in e], [])

    @inlineCallbacks
    def test_read_only_until_failover_ends(self):
        """READONLY (a replica now): the rewrite is refused too and tried again, less often, until Redis takes writes."""
        from socketdock.cluster.roster import REWRITE_DELAY

        yield self.link.command("REPLICAOF", "127.0.0.1", "1")
        yield self.open_twenty()
        self.assertEqual(len(self.lines("READONLY")), 2)  # the link's line, the roster's
        self.clock.advance(REWRITE_DELAY)
        yield self.link.command("PING")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the next rewrite
        yield self.link.command("REPLICAOF", "NO", "ONE")
        self.clock.advance(REWRITE_DELAY)
        yield self.link.command("PING")
        self.assertEqual((yield self.records()), (0, 0))  # not yet: the delay doubled
        self.clock.advance(REWRITE_DELAY)
        yield self.link.command("PING")
        self.assertEqual((yield self.records()), (20, 20))
        self.assertEqual([e for e in self.events if "log_failure" in e], [])


class SameNameTests(TestCase):
    """
    A run that finds another run's heartbeat under its name at its first
    link: a live instance (it beats) refuses it; a crashed run (it lapses)
    is taken over, its notices recovered.  The waiting run's Clock is the
    test's; the other run beats when the test says.
    """

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        from twisted.internet.task import Clock
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        redis = yield start_redis(self, reactor)
        self.address = parse_cluster_url(redis.url(db=6))
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.first = Node(self, self.address, "http://x")
        yield self.first.node.link.when_up()
        self.first.roster.added("a" * 32)
        self.first.roster.record("a" * 32)
        yield self.first.roster.beat()

    @inlineCallbacks
    def second(self):
        """The second run, once it has seen the first's heartbeat; and the lines it was refused with."""
        from twisted.logger import ILogObserver, globalLogPublisher
        from zope.interface import implementer

        seen: Deferred = Deferred()

        @implementer(ILogObserver)
        def observe(event):
            if "an earlier run of" in event.get("log_format", "") and not seen.called:
                seen.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        refused: list[str] = []
        node = Node(self, self.address, "http://x", self.clock, refused.append)
        yield seen
        return node, refused

    @inlineCallbacks
    def owed(self, via):
        members = yield via.node.link.command("SMEMBERS", b"socketdock:6:owed:http://x")
        return sorted(m.decode() for m in members)

    @inlineCallbacks
    def test_live_instance_refuses_the_second(self):
        """The first beats while the second waits: the second is refused with one line, changes nothing, recovers nothing."""
        second, refused = yield self.second()
        self.assertEqual(refused, [])
        yield self.first.roster.beat()
        self.clock.advance(3600)
        yield second.node.link.command("PING")  # after its second look
        self.assertEqual(len(refused), 1)
        self.assertIn("another live instance already runs as http://x", refused[0])
        self.assertIn("externalhostandport", refused[0])
        self.assertEqual(second.recovered, [])
        self.assertFalse(second.node.link.up)
        self.assertEqual((yield self.owed(self.first)), ["a" * 32])
        token = yield self.first.node.link.command("GET", b"socketdock:6:alive:http://x")
        self.assertEqual(token.decode(), self.first.roster._token)
        # The first is undisturbed: its beats still find its own heartbeat.
        yield self.first.roster.beat()
        self.assertEqual([e for e in self.events if "rejoining" in e.get("log_format", "")], [])

    @inlineCallbacks
    def test_crashed_run_is_taken_over_once_it_lapses(self):
        """The first crashed: once its heartbeat lapses, the second joins and sends its notices."""
        yield self.first.crash()
        second, refused = yield self.second()
        self.clock.advance(3600)
        yield second.node.link.command("PING")
        self.assertEqual(second.recovered, [])  # still alive: the second keeps waiting
        yield second.node.link.command("DEL", b"socketdock:6:alive:http://x")  # it lapses
        self.clock.advance(3600)
        yield second.node.link.when_up()
        self.assertEqual((second.recovered, refused), ([["a" * 32]], []))

    @inlineCallbacks
    def test_connections_made_while_waiting_are_written(self):
        """Connections opened while the first join waited are in Redis once it joins."""
        yield self.first.crash()
        second, _ = yield self.second()
        second.roster.added("b" * 32)
        second.roster.record("b" * 32)
        yield second.node.link.command("DEL", b"socketdock:6:alive:http://x")
        self.clock.advance(3600)
        yield second.node.link.when_up()
        yield second.node.link.command("PING")
        self.assertEqual((yield self.owed(second)), ["a" * 32, "b" * 32])
        where = yield second.node.link.command("HGET", b"socketdock:6:where", b"b" * 32)
        self.assertEqual(where, b"http://x")
