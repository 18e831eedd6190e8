"""
The handshake waits for the journal (SPEC §6): a real instance on loopback
whose journal commits are held by the test, so that what a client sees while
its connection is not yet on disk is under the test's control.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock

from socketdock.relay.journal import Journal
from tests.fakes import InlineWriter
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client


class HeldWriter:
    """Stands in front of the journal's writer and holds each commit until released."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.held: list[tuple[object, Deferred]] = []
        self._waiters: list[Deferred] = []
        self._holding = True

    def start(self) -> None:
        self._inner.start()

    def stop(self) -> None:
        self._inner.stop()

    def __call__(self, work) -> Deferred:
        if not self._holding:
            return self._inner(work)
        d: Deferred = Deferred()
        self.held.append((work, d))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            # Not from inside the journal's call: it has yet to see the result.
            reactor.callLater(0, waiter.callback, None)
        return d

    def wait_held(self) -> Deferred:
        """Fires once a commit is waiting."""
        if self.held:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def release(self) -> None:
        """Run the held commits, and pass later ones straight through."""
        self._holding = False
        held, self.held = self.held, []
        for work, d in held:
            self._inner(work).chainDeferred(d)


def stored(path: str) -> list[str]:
    """The ids on disk, read the way the next start reads them."""
    journal = Journal(path, Clock(), InlineWriter())
    try:
        return sorted(journal.open())
    finally:
        journal.close()


class JournalHandshakeTests(RelayTestCase):
    @inlineCallbacks
    def start_with_held_journal(self, **settings):
        self.path = os.path.abspath(self.mktemp())
        yield self.start(journal=self.path, **settings)
        journal = self.relay.service.relay.journal
        self.writer = journal._writer = HeldWriter(journal._writer)

    @inlineCallbacks
    def test_open_waits_for_the_commit(self):
        """No 101 until the connection is on disk; then the client is open."""
        yield self.start_with_held_journal()
        opening = connect_client(reactor, self.relay.ws_url())
        yield self.writer.wait_held()
        self.assertNoResult(opening)
        self.writer.release()
        client = yield opening
        self.addCleanup(client.shutdown)
        client.send_text("hi")
        (message,) = yield self.backend.wait_for("message", 1)
        connection_id = message["meta"]["connection_id"]
        journal = self.relay.service.relay.journal
        rows = journal._db.execute("SELECT id FROM connections").fetchall()
        self.assertEqual(rows, [(connection_id,)])

    @inlineCallbacks
    def test_stop_during_the_commit_refuses_and_forgets(self):
        """
        A stop that begins while the record is written refuses the handshake
        (503) and, as no backend heard of it, leaves nothing in the journal.
        """
        yield self.start_with_held_journal()
        opening = connect_client(reactor, self.relay.ws_url())
        yield self.writer.wait_held()
        stopped = self.relay.service.stopService()
        self.writer.release()
        refused = yield self.assertFailure(opening, HandshakeRefused)
        self.assertEqual(refused.status, 503)
        yield stopped
        # Forgotten in the stop's last write, which the held commit delayed.
        self.assertEqual(stored(self.path), [])
        self.assertEqual(self.backend.disconnects, [])

    @inlineCallbacks
    def test_stop_during_the_commit_with_connecturi_sends_the_notice(self):
        """With admission the backend heard of it: it gets a notice, and the record goes once sent."""
        yield self.start_with_held_journal(connecturi="{backend}/connect")
        opening = connect_client(reactor, self.relay.ws_url())
        yield self.writer.wait_held()
        # The drain alone (the stop below closes the backend pool, which
        # should not race the notice's answer).
        drained = self.relay.service.relay.drain(10)
        self.writer.release()
        refused = yield self.assertFailure(opening, HandshakeRefused)
        self.assertEqual(refused.status, 503)
        (connect,) = self.backend.connects
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["connection_id"], connect["meta"]["connection_id"])
        self.assertEqual((yield drained), 0)
        yield self.relay.service.stopService()
        self.assertEqual(stored(self.path), [])
