"""
Unit tests for :mod:`socketdock.relay.journal` and the relay's use of it: a Clock
for the retries, a writer the test holds and releases for the group commit,
real SQLite files in the test's temporary directory.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.config.settings import load_config
from socketdock.ops.metrics import Metrics
from socketdock.ops.runtime import RuntimeMetrics
from socketdock.relay.backend import IBackend
from socketdock.relay.journal import (
    RETRY_DELAY,
    Journal,
    JournalError,
    JournalService,
    check_journal,
)
from socketdock.relay.registry import Registry
from socketdock.relay.session import RECOVERED_REASON, ISocket, Relay
from socketdock.service import TuningService
from socketdock.tap import Options, make_service, preflight
from tests.fakes import InlineWriter


class CountingWriter(InlineWriter):
    """Runs each transaction inline and counts them; can be told to fail or hold."""

    def __init__(self) -> None:
        self.transactions = 0
        self.fail_next = 0
        self.held: list[tuple[object, Deferred]] = []
        self.hold = False
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def __call__(self, work):
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((work, d))
            return d
        return self._run(work)

    def _run(self, work):
        self.transactions += 1
        if self.fail_next:
            self.fail_next -= 1
            return fail(sqlite3.OperationalError("disk I/O error"))
        return InlineWriter.__call__(self, work)

    def release(self, hold: bool = False) -> None:
        """Run the held transactions now; with ``hold``, hold the ones they start."""
        held, self.held, self.hold = self.held, [], hold
        for work, d in held:
            self._run(work).chainDeferred(d)


def stored(path: str) -> list[str]:
    """The ids on disk, read by a fresh journal (the way a restart reads them)."""
    journal = Journal(path, Clock(), InlineWriter())
    try:
        return sorted(journal.open())
    finally:
        journal.close()


class JournalTests(SynchronousTestCase):
    """Recording, forgetting and batching, with the clock under test control."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.clock = Clock()
        self.writer = CountingWriter()
        self.journal = Journal(self.path, self.clock, self.writer)
        self.assertEqual(self.journal.open(), [])

    def close(self) -> None:
        self.successResultOf(self.journal.close())

    def committed(self) -> list[str]:
        """The ids committed so far, read on the journal's own (exclusive) connection."""
        return sorted(row[0] for row in self.journal._db.execute("SELECT id FROM connections"))  # type: ignore[union-attr]  # reads the open journal's private connection on purpose

    def test_idle_journal_commits_at_once(self) -> None:
        """With no commit running, a record is written at once: no timer, no window."""
        recorded = self.journal.record("a")
        self.assertEqual(self.writer.transactions, 1)
        self.successResultOf(recorded)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.close()
        self.assertEqual(stored(self.path), ["a"])

    def test_record_fires_only_once_on_disk(self) -> None:
        """record()'s Deferred waits for the commit that holds it."""
        self.writer.hold = True
        recorded = self.journal.record("a")
        self.assertNoResult(recorded)
        self.assertEqual(self.committed(), [])
        self.writer.release()
        self.successResultOf(recorded)
        self.assertEqual(self.committed(), ["a"])
        self.close()

    def test_records_during_a_commit_form_the_next_one(self) -> None:
        """
        Records made while a commit runs wait for it, then go together in
        the next commit, which starts as soon as the first ends.
        """
        self.writer.hold = True
        first = self.journal.record("a")
        later = [self.journal.record(cid) for cid in ("b", "c", "d")]
        self.assertEqual(len(self.writer.held), 1)
        self.assertEqual(self.journal.pending(), 3)
        self.writer.release(hold=True)
        self.successResultOf(first)
        # The second commit was started when the first ended, and holds b-d.
        self.assertEqual((len(self.writer.held), self.journal.pending()), (1, 0))
        for d in later:
            self.assertNoResult(d)
        self.assertEqual(self.committed(), ["a"])
        self.writer.release()
        for d in later:
            self.successResultOf(d)
        self.assertEqual(self.writer.transactions, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.committed(), ["a", "b", "c", "d"])
        self.close()

    def test_record_then_forget_in_one_batch_cancels(self) -> None:
        """A connection recorded and forgotten in the same batch never reaches the disk."""
        self.writer.hold = True
        self.journal.record("x")
        recorded = self.journal.record("a")
        self.journal.forget("a")
        self.assertEqual(self.journal.pending(), 0)
        self.writer.release()
        self.successResultOf(recorded)
        self.assertEqual(self.writer.transactions, 1)
        self.close()
        self.assertEqual(stored(self.path), ["x"])

    def test_forget_after_written(self) -> None:
        """A forget after the record was written deletes it in a later commit."""
        self.journal.record("a")
        self.journal.record("b")
        self.journal.forget("a")
        self.assertEqual(self.writer.transactions, 3)
        self.close()
        self.assertEqual(stored(self.path), ["b"])

    def test_changes_during_a_write_form_the_next_batch(self) -> None:
        """A forget of the record being written follows it in the next commit."""
        self.writer.hold = True
        self.journal.record("a")
        self.journal.forget("a")  # "a" is being written: its delete must follow
        self.journal.record("b")
        self.assertEqual(len(self.writer.held), 1)
        self.writer.release()
        self.assertEqual(self.writer.transactions, 2)
        self.close()
        self.assertEqual(stored(self.path), ["b"])

    def test_write_error_is_logged_and_retried(self) -> None:
        """A failed write is logged once, kept, and retried; the journal keeps working."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]  # Twisted wants a TestCase; this one has addCleanup too
        self.writer.fail_next = 2
        first = self.journal.record("a")
        # The handshake is not held up by a failing disk.
        self.successResultOf(first)
        self.successResultOf(self.journal.record("b"))
        self.journal.forget("a")
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.journal.pending(), 1)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["why"], "disk I/O error")
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.journal.pending(), 0)
        self.close()
        self.assertEqual(stored(self.path), ["b"])

    def test_close_writes_pending_and_keeps_the_rest(self) -> None:
        """A stop writes what is pending; unforgotten connections stay for the next start."""
        self.journal.record("a")
        self.journal.record("b")
        self.writer.hold = True
        self.journal.forget("a")
        self.journal.record("c")
        self.writer.release()
        self.close()
        self.assertTrue(self.writer.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.journal.record("late")
        self.assertEqual(self.journal.pending(), 0)
        self.assertEqual(stored(self.path), ["b", "c"])

    def test_close_waits_for_the_write_in_flight(self) -> None:
        """A stop during a write waits for it, then writes the rest."""
        self.writer.hold = True
        self.journal.record("a")
        waiting = self.journal.record("b")
        closed = self.journal.close()
        self.assertNoResult(closed)
        self.writer.release()
        self.successResultOf(closed)
        self.successResultOf(waiting)
        self.assertEqual(stored(self.path), ["a", "b"])

    def test_leftovers_listed_at_open(self) -> None:
        """What an instance left in the journal is what the next one is given."""
        for cid in ("x", "y"):
            self.journal.record(cid)
        # No close: as after a crash (SIGKILL), the WAL holds the commits.
        self.journal._db.close()  # type: ignore[union-attr]  # reads the open journal's private connection on purpose
        self.assertEqual(stored(self.path), ["x", "y"])


class StartupCheckTests(SynchronousTestCase):
    """An unusable journal stops start-up with one line naming the key."""

    def test_corrupt_file(self) -> None:
        """A file that is not an SQLite database is refused, with the fix."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 200)
        e = self.assertRaises(JournalError, check_journal, path)
        self.assertTrue(str(e).startswith(f"{path!r} is not a usable SocketDock journal"))
        self.assertIn("move it aside", str(e))
        self.assertEqual(len(str(e).splitlines()), 1)

    def test_directory_missing_or_not_a_directory(self) -> None:
        """A path whose directory cannot hold files is refused (works even as root)."""
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        e = self.assertRaises(JournalError, check_journal, os.path.join(blocker, "j.sqlite"))
        self.assertIn("cannot be opened for writing", str(e))
        self.assertIn("writable by the user SocketDock runs as", str(e))

    def test_unwritable_directory(self) -> None:
        """A directory the user may not write to is refused."""
        if os.geteuid() == 0:
            # Permissions do not stop root; /proc refuses new files to anyone.
            directory = "/proc"
        else:
            directory = self.mktemp()
            os.makedirs(directory)
            os.chmod(directory, 0o500)
            self.addCleanup(os.chmod, directory, 0o700)
        e = self.assertRaises(JournalError, check_journal, os.path.join(directory, "j.sqlite"))
        self.assertIn("cannot be opened for writing", str(e))

    def test_in_use_by_another_instance(self) -> None:
        """A journal held by a running instance is refused, so two never share one."""
        path = self.mktemp()
        journal = Journal(path, Clock(), InlineWriter())
        journal.open()
        self.addCleanup(journal.close)
        e = self.assertRaises(JournalError, check_journal, path)
        self.assertIn("in use by another process", str(e))

    def test_good_file_passes_and_is_created(self) -> None:
        """A fresh path is created and accepted."""
        path = self.mktemp()
        check_journal(path)
        self.assertTrue(os.path.exists(path))

    def test_options_report_it_as_usage_error(self) -> None:
        """twistd's option parsing turns it into a one-line UsageError."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\x00garbage" * 1000)
        options = Options(environ={}, preflight=lambda c: preflight(c, MemoryReactorClock()))
        e = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--bindport", "0", "--journal", path],
        )
        self.assertTrue(str(e).startswith(f"journal: {path!r} is not a usable SocketDock journal"))

    def test_open_raises_journal_error(self) -> None:
        """Journal.open on a corrupt file raises JournalError (the service logs it)."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        journal = Journal(path, Clock(), InlineWriter())
        self.assertRaises(JournalError, journal.open)
        journal.record("a")
        self.assertEqual(journal.pending(), 0)


@implementer(IBackend)
class _Backend:
    """An IBackend whose disconnect notices wait until the test answers them."""

    admits = False

    def __init__(self) -> None:
        self.notices: list[tuple[tuple, dict, Deferred]] = []

    def connect(self, connection_id, headers, offered, context=None):
        return succeed(None)

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        return succeed(None)

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        d: Deferred = Deferred()
        self.notices.append(((connection_id, code, reason, initiator), {"recovered": recovered}, d))
        return d


@implementer(ISocket)
class _Socket:
    connection_id = ""
    tags: tuple = ()

    backend_state = None  # the backend's state (SPEC §9), never set here

    def confirm(self, timeout: float) -> Deferred[None]:
        return Deferred()  # never confirmed: these tests do not ask

    def deliver_frame(self, frame: object) -> int:
        from socketdock.relay.registry import NOT_OPEN

        return NOT_OPEN  # a tag send falls back to deliver()

    def deliver(self, payload, is_binary):
        return succeed(None)

    def close(self, code, reason, initiator):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def describe(self):
        return {}


class RelayJournalTests(SynchronousTestCase):
    """The relay records accepted connections and forgets them once noticed."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.clock = Clock()
        self.journal = Journal(self.path, self.clock, InlineWriter())
        self.journal.open()
        self.backend = _Backend()
        registry = Registry()
        self.relay = Relay(
            self.backend,
            registry,
            Metrics(active=lambda: 0, queued=lambda: 0),
            self.clock,
            8,
            self.journal,
        )

    def test_open_records_and_notice_forgets(self) -> None:
        """An accepted connection is on disk until its notice is delivered."""
        self.successResultOf(self.relay.record("a" * 32))
        session = self.relay.open_session("a" * 32, _Socket())
        self.relay.orphan("b" * 32, "client left during the handshake", "client")
        session.ended(1000, "", "client")
        self.assertEqual(len(self.backend.notices), 2)
        self.backend.notices[0][2].callback(None)
        self.successResultOf(self.journal.close())
        self.assertEqual(stored(self.path), ["a" * 32])

    def test_failed_notice_is_not_forgotten(self) -> None:
        """A notice that ends in an error (not delivered) keeps its journal entry."""
        self.successResultOf(self.relay.record("a" * 32))
        session = self.relay.open_session("a" * 32, _Socket())
        session.ended(None, "", "client")
        self.backend.notices[0][2].errback(Failure(RuntimeError("boom")))
        self.flushLoggedErrors(RuntimeError)
        self.successResultOf(self.journal.close())
        self.assertEqual(stored(self.path), ["a" * 32])

    def test_recover_sends_recovered_notices(self) -> None:
        """Leftover ids get code null, initiator server, recovered, and are then forgotten."""
        self.journal.record("c" * 32)
        self.journal.record("d" * 32)
        self.relay.recover(["c" * 32, "d" * 32])
        self.assertEqual(
            [(n[0], n[1]) for n in self.backend.notices],
            [
                (("c" * 32, None, RECOVERED_REASON, "server"), {"recovered": True}),
                (("d" * 32, None, RECOVERED_REASON, "server"), {"recovered": True}),
            ],
        )
        idle = self.relay.idle()
        self.backend.notices[0][2].callback(None)
        self.assertNoResult(idle)
        self.backend.notices[1][2].callback(None)
        self.successResultOf(idle)
        self.successResultOf(self.journal.close())
        self.assertEqual(stored(self.path), [])


class JournalServiceTests(SynchronousTestCase):
    """The service opens the journal, hands over the leftovers, and closes it."""

    def test_start_recovers_leftovers(self) -> None:
        """startService passes the ids left by the last run to recover()."""
        path = self.mktemp()
        first = Journal(path, Clock(), InlineWriter())
        first.open()
        first.record("z")
        first.flush()
        self.successResultOf(first.close())
        recovered: list[list[str]] = []
        service = JournalService(
            Journal(path, Clock(), InlineWriter()), lambda ids, _details: recovered.append(ids)
        )
        service.startService()
        self.assertEqual(recovered, [["z"]])
        self.successResultOf(service.stopService())

    def test_start_with_unusable_journal_runs_on(self) -> None:
        """A journal that broke after the parse-time check is logged; the service runs."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]  # Twisted wants a TestCase; this one has addCleanup too
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"y" * 4096)
        recovered: list[list[str]] = []
        service = JournalService(
            Journal(path, Clock(), InlineWriter()), lambda ids, _details: recovered.append(ids)
        )
        service.startService()
        self.assertTrue(service.running)
        self.assertEqual(recovered, [])
        self.assertEqual(
            [e["log_level"] for e in events if e["log_level"] >= LogLevel.error], [LogLevel.error]
        )
        self.successResultOf(service.stopService())

    def test_make_service_starts_the_journal_before_listening(self) -> None:
        """With journal set, the journal's service is the first child, before the listeners."""
        config = load_config({"bindport": "0", "journal": self.mktemp()}, {}, None)
        service = make_service(config, MemoryReactorClock())
        children = [c for c in service if not isinstance(c, (TuningService, RuntimeMetrics))]
        self.assertIsInstance(children[0], JournalService)
        self.assertEqual(len(children), 2)
        without = make_service(load_config({"bindport": "0"}, {}, None), MemoryReactorClock())
        self.assertFalse(any(isinstance(c, JournalService) for c in without))
