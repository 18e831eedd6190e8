"""
The roster's joins and claims over a fake link, at the level of the scripts'
results (the scripts themselves run in Redis, in tests/cluster/test_roster.py):
a restart racing a survivor's claim, from either side, and joins racing
connections that come and go.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.cluster.roster import Roster
from socketdock.cluster.scripts import Names
from tests.cluster.fakes import FakeLink, FakeRedis

NAMES = Names.for_db(0)
ME = "http://a.example:1"
LOST = "http://b.example:1"


class RosterClaimTests(SynchronousTestCase):
    """One instance's roster; the test answers REJOIN and BEAT as Redis would."""

    def setUp(self) -> None:
        self.link = FakeLink(FakeRedis())
        self.clock = Clock()
        self.recovered: list[tuple[list[str], dict[str, str]]] = []
        self.fenced: list[list[str]] = []
        self.taken: list[str] = []
        self.roster = Roster(
            self.link,
            NAMES,
            lambda: ME,
            1.0,
            lambda ids, details: self.recovered.append((ids, details)),
            self.fenced.append,
            self.clock,
            self.taken.append,
        )

    def joined(self, fenced=(), leftover=(), details=()) -> None:
        """Start a join and answer it."""
        d = self.roster.rejoin()
        self.link.answer(0, [list(fenced), list(leftover), list(details)])
        self.successResultOf(d)

    def test_restart_after_a_survivor_claimed(self) -> None:
        """The survivor's BEAT ran first: the restarted run finds its ids claimed, sends none."""
        self.joined(fenced=[b"c1"], leftover=[])
        self.assertEqual(self.recovered, [])
        self.assertEqual(self.fenced, [])  # a new run holds none of them
        self.assertEqual(self.roster.status()["owed"], 0)

    def test_restart_before_a_survivor_claimed(self) -> None:
        """The REJOIN ran first: this run sends its previous run's notices, with their details."""
        self.joined(leftover=[b"c1", b"c2"], details=[b"c2", b'{"tags":["t"]}'])
        self.assertEqual(self.recovered, [(["c1", "c2"], {"c2": '{"tags":["t"]}'})])
        self.assertEqual(self.roster.status()["owed"], 2)

    def test_survivor_claims_once(self) -> None:
        """A beat claims a lost instance's notices; a beat asked meanwhile does not run."""
        self.joined()
        first = self.roster.beat()
        second = self.roster.beat()
        self.successResultOf(second)
        self.assertEqual(self.link.names(), ["BEAT"])
        self.link.answer(0, [1, [LOST.encode(), b"c1", b"", LOST.encode(), b"c2", b"{}"]])
        self.successResultOf(first)
        self.assertEqual(self.recovered, [(["c1", "c2"], {"c2": "{}"})])
        self.assertEqual(self.roster.recovered, 2)

    def test_cut_off_and_claimed_closes_what_is_still_open(self) -> None:
        """Back after a survivor claimed this instance: its still-open ones are closed."""
        self.joined()
        self.roster.added("live1")
        self.assertEqual(self.link.names(), ["APPLY"])
        self.link.answer(0, 1)
        self.roster.lost_link()
        self.joined(fenced=[b"live1", b"gone1"])
        self.assertEqual(self.fenced, [["live1"]])
        self.flushLoggedErrors()

    def test_name_taken_until_the_old_heartbeat_lapses(self) -> None:
        """A crashed run's heartbeat still alive: wait for it to lapse, then recover its notices."""
        d = self.roster.rejoin()
        self.link.answer(0, [b"taken", b"7", 800])
        self.assertNoResult(d)
        self.clock.advance(0.8)
        self.assertEqual(self.link.names(), ["REJOIN"])
        self.link.answer(0, [[], [b"c1"], []])
        self.successResultOf(d)
        self.assertEqual(self.recovered, [(["c1"], {})])
        self.assertEqual(self.taken, [])

    def test_name_taken_by_a_live_instance(self) -> None:
        d = self.roster.rejoin()
        self.link.answer(0, [b"taken", b"7", 800])
        self.clock.advance(0.8)
        self.link.answer(0, [b"taken", b"8", 1000])  # it beat meanwhile: alive
        self.assertNoResult(d)
        self.assertEqual(len(self.taken), 1)
        self.assertIn("give each instance its own externalhostandport", self.taken[0])

    def test_connections_change_during_the_first_join(self) -> None:
        """The first join's snapshot is stale by its answer: a second join, one recovery."""
        d = self.roster.rejoin()
        self.roster.added("new1")
        self.link.answer(0, [[], [b"old1"], []])
        self.assertEqual(self.link.names(), ["REJOIN"])
        self.assertIn("new1", self.link.pending[0].args)
        self.link.answer(0, [[], [], []])
        self.successResultOf(d)
        self.assertEqual(self.recovered, [(["old1"], {})])

    def test_heartbeat_lost_rejoins(self) -> None:
        self.joined()
        d = self.roster.beat()
        self.link.answer(0, [0])
        self.assertEqual(self.link.names(), ["REJOIN"])
        self.link.answer(0, [[], [], []])
        self.successResultOf(d)

    def test_link_down_mid_beat(self) -> None:
        self.joined()
        d = self.roster.beat()
        self.link.go_down()
        self.successResultOf(d)
        self.assertEqual(self.recovered, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_leftover_this_run_already_owes_is_not_sent_twice(self) -> None:
        """An id accepted by this run before its first join is this run's, not a leftover."""
        self.successResultOf(self.roster.record("c1"))
        self.joined(leftover=[b"c1", b"c2"])
        self.assertEqual(self.recovered, [(["c2"], {})])
