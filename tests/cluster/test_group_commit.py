"""
The roster's group commit, against a link whose answers the test gives: the
changes of handshakes arriving together go in one script, and each record
fires only once the script holding it is answered.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.cluster.link import RedisRefused
from socketdock.cluster.roster import REWRITE_DELAY, Roster
from socketdock.cluster.scripts import APPLY, REJOIN, Names
from socketdock.relay.reach import Unreachable


class HeldLink:
    """A link whose every script waits for the test to answer it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, list, Deferred]] = []

    def eval(self, script: bytes, keys: list, args: list) -> Deferred:
        d: Deferred = Deferred()
        self.sent.append((script, args, d))
        return d

    def batches(self) -> list[list]:
        """The (op, id, details) triples of each APPLY sent so far."""
        return [args[2:] for script, args, _ in self.sent if script == APPLY]


class GroupCommitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = HeldLink()
        self.clock = Clock()
        self.roster = Roster(
            self.link,
            Names.for_db(0),
            lambda: "http://me",
            5.0,
            lambda ids, d: None,
            clock=self.clock,
        )
        self.roster._joined = True  # as after a join; joining is test_roster's
        self.roster._first = False

    def open(self, cid: str, details: str = "") -> Deferred[None]:
        """What a handshake does: live from its start, owed once accepted."""
        self.roster.added(cid)
        return self.roster.record(cid, details)

    def test_handshakes_together_one_round_trip(self) -> None:
        """The first open goes at once; the 50 made while it is on its way go in one script, answered only when it is."""
        first = self.roster.record("c0")
        self.assertEqual(self.link.batches(), [["r", "c0", ""]])
        rest = [self.open(f"c{i}", '{"tags":["t"]}' if i == 7 else "") for i in range(1, 51)]
        self.assertEqual(len(self.link.sent), 1)  # nothing more until the first is answered
        self.assertNoResult(first)
        self.link.sent[0][2].callback(1)
        self.successResultOf(first)
        for d in rest:
            self.assertNoResult(d)  # their write is on its way, not acknowledged
        self.assertEqual(len(self.link.sent), 2)
        second = self.link.batches()[1]
        self.assertEqual(len(second), 50 * 2 * 3)
        self.assertEqual(second[:6], ["a", "c1", "", "r", "c1", ""])
        self.assertIn('{"tags":["t"]}', second)
        self.link.sent[1][2].callback(1)
        for d in rest:
            self.successResultOf(d)
        self.assertEqual(len(self.link.sent), 2)  # nothing left to send

    def test_changes_keep_their_order(self) -> None:
        """Opens, closes and delivered notices made together go in the order they were made."""
        self.roster.record("c0")
        self.open("c1")
        self.roster.gone("c1")
        self.roster.forget("c1")
        self.roster.note("c0", "x")
        self.link.sent[0][2].callback(1)
        self.assertEqual(
            self.link.batches()[1],
            ["a", "c1", "", "r", "c1", "", "g", "c1", "", "f", "c1", "", "n", "c0", "x"],
        )

    def test_refused_batch_answers_each_and_rewrites(self) -> None:
        """A batch Redis refuses answers every handshake in it (served, as before) and the whole record is rewritten after REWRITE_DELAY."""
        self.roster.added("c0")
        self.roster.record("c0")
        waiting = [self.open(f"c{i}") for i in range(1, 4)]
        self.link.sent[0][2].callback(1)
        self.link.sent[1][2].errback(RedisRefused("OOM command not allowed"))
        for d in waiting:
            self.successResultOf(d)
        self.assertEqual(len(self.link.sent), 2)
        self.clock.advance(REWRITE_DELAY)
        script, args, _ = self.link.sent[2]
        self.assertEqual(script, REJOIN)
        self.assertEqual(args[5:7], [4, 4])  # every live and owed id, rewritten
        self.assertEqual(args[7:11], ["c0", "c1", "c2", "c3"])

    def test_lost_link_answers_and_stops_mirroring(self) -> None:
        """A batch lost with the link answers its handshakes; changes made while it is down wait for the rejoin."""
        self.roster.record("c0")
        waiting = self.open("c1")
        self.roster.lost_link()
        later = self.open("c2")
        self.successResultOf(later)  # at once: the rejoin writes it
        self.link.sent[0][2].errback(Unreachable("lost the link to Redis"))
        self.assertEqual(len(self.link.sent), 2)  # c1's batch goes (and fails the same way)
        self.assertNoResult(waiting)
        self.link.sent[1][2].errback(Unreachable("lost the link to Redis"))
        self.successResultOf(waiting)
        self.assertEqual(self.link.batches()[1], ["a", "c1", "", "r", "c1", ""])
        self.assertEqual(self.roster.status()["owed"], 3)
