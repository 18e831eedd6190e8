"""The journal keeps a connection's tags and state for its recovered notice (SPEC §9)."""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import IBackend
from socketdock.relay.journal import Journal
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay
from socketdock.relay.state import details_text, parse_details
from tests.fakes import InlineWriter

A, B = "a" * 32, "b" * 32


def reopened(path: str) -> tuple[list[str], dict[str, str]]:
    """What a restart reads: the ids and their details."""
    journal = Journal(path, Clock(), InlineWriter())
    try:
        return sorted(journal.open()), journal.left
    finally:
        journal.close()


@implementer(IBackend)
class _Backend:
    admits = False

    def __init__(self) -> None:
        self.notices: list[dict] = []

    def connect(self, connection_id, headers, offered, context=None):
        return succeed(None)

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        return succeed(None)

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        self.notices.append({"id": connection_id, "tags": tags, "state": state})
        return Deferred()


class DetailsTextTests(SynchronousTestCase):
    def test_round_trip(self):
        """Tags and state go into one JSON object and come back; nothing makes an empty text."""
        self.assertEqual(details_text((), None), "")
        for tags, state in [(("t", "u"), None), ((), '{"a":[1,"é"]}'), (("t",), "null")]:
            self.assertEqual(parse_details(details_text(tags, state)), (tags, state))
        self.assertEqual(parse_details("not json"), ((), None))


class JournalDetailsTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.journal = Journal(self.path, Clock(), InlineWriter())
        self.journal.open()

    def test_record_then_note_survive_a_restart(self):
        """The details given at record, then replaced by a note, are what a restart reads."""
        self.journal.record(A, details_text(("t",), '{"v":1}'))
        self.journal.record(B)
        self.journal.note(A, details_text(("t", "u"), '{"v":2}'))
        self.journal.note("c" * 32, details_text(("x",), None))  # never recorded: ignored
        self.successResultOf(self.journal.close())
        ids, left = reopened(self.path)
        self.assertEqual(ids, [A, B])
        self.assertEqual(parse_details(left[A]), (("t", "u"), '{"v":2}'))
        self.assertNotIn(B, left)

    def test_note_after_forget_changes_nothing(self):
        """A note that follows the forget does not bring the row back."""
        self.journal.record(A, details_text(("t",), None))
        self.journal.forget(A)
        self.journal.note(A, details_text(("u",), None))
        self.successResultOf(self.journal.close())
        self.assertEqual(reopened(self.path), ([], {}))

    def test_version_1_file_is_migrated(self):
        """A journal written before details existed opens, keeps its ids, and takes details."""
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE connections (id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("INSERT INTO connections (id) VALUES (?)", (A,))
        db.execute("PRAGMA user_version = 1")
        db.commit()
        db.close()
        journal = Journal(path, Clock(), InlineWriter())
        self.assertEqual(journal.open(), [A])
        journal.record(B, details_text(("t",), "1"))
        self.successResultOf(journal.close())
        ids, left = reopened(path)
        self.assertEqual(ids, [A, B])
        self.assertEqual(parse_details(left[B]), (("t",), "1"))

    def test_recovered_notices_carry_tags_and_state(self):
        """Relay.recover gives each notice the tags and state kept for it; none when none kept."""
        backend = _Backend()
        relay = Relay(backend, Registry(), Metrics(active=lambda: 0, queued=lambda: 0), Clock(), 8)
        relay.recover([A, B], {A: details_text(("t",), '{"s":true}')})
        self.assertEqual(
            backend.notices,
            [
                {"id": A, "tags": ("t",), "state": '{"s":true}'},
                {"id": B, "tags": (), "state": None},
            ],
        )
