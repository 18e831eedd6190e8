"""
The journal: which accepted connections still owe the backend a disconnect
notice, kept in a small SQLite file so that it survives a crash (SPEC §6).

A connection is recorded when it is accepted and forgotten once its notice
was delivered; whatever is left when an instance starts was lost by the one
before it, and gets a notice marked ``recovered``.

Writes never block the reactor: record/forget only touch a dict, and the
changes collected over a short window (L{BATCH_WINDOW}; 0 means one reactor
turn) go to disk in one transaction on a single writer thread.  While one
transaction runs, the next batch collects, so a busy instance commits larger
batches rather than more of them.  A record followed by its forget in the
same batch never reaches the disk.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from socketdock.config.settings import ConfigError

#: Seconds between attempts while the disk refuses writes.
RETRY_DELAY = 1.0

#: Seconds a batch stays open after its first change.  Each transaction costs
#: a few hundred microseconds of CPU (the hop to the writer thread, the fsync);
#: under a stream of handshakes this window makes one transaction carry many of
#: them, while it adds only milliseconds to what a crash can miss.
BATCH_WINDOW = 0.05

_SCHEMA = "CREATE TABLE IF NOT EXISTS connections (id TEXT PRIMARY KEY) WITHOUT ROWID"


class JournalError(Exception):
    """The journal file cannot be used; ``str(e)`` says why and what to do."""


def _connect(path: str) -> sqlite3.Connection:
    """
    Open (or create) the journal, check it, and lock it for this process.

    The exclusive lock keeps a second instance pointed at the same file from
    reporting this instance's live connections as lost; it is taken by the
    first write below and held until the connection closes.
    """
    try:
        db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise JournalError(_explain(e)) from None
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(
                f"cannot use write-ahead logging (mode {mode}); put the journal "
                "on a local file system where SocketDock may create files"
            )
        # FULL: a committed record survives a power loss too; the fsync runs
        # on the writer thread, never on the reactor.
        db.execute("PRAGMA synchronous = FULL")
        db.execute(_SCHEMA)
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise JournalError(
                f"is corrupt ({verdict}); move it aside (its connections are "
                "lost) or point journal at a new file"
            )
        db.execute("PRAGMA user_version = 1")
    except sqlite3.Error as e:
        db.close()
        raise JournalError(_explain(e)) from None
    except JournalError:
        db.close()
        raise
    return db


def _explain(e: sqlite3.Error) -> str:
    text = str(e)
    if "not a database" in text or "malformed" in text:
        return (
            f"is not a usable SocketDock journal ({text}); move it aside "
            "(its connections are lost) or point journal at a new file"
        )
    if "locked" in text:
        return (
            f"is in use by another process ({text}); give each instance "
            "its own journal file"
        )
    if "readonly" in text or "unable to open" in text:
        return (
            f"cannot be opened for writing ({text}); make its directory exist "
            "and be writable by the user SocketDock runs as"
        )
    return f"cannot be used ({text}); fix the file or point journal elsewhere"


def _apply(db: sqlite3.Connection, batch: dict[str, bool]) -> None:
    """Write one batch in one transaction (on the writer thread)."""
    if not batch:
        return
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT OR IGNORE INTO connections (id) VALUES (?)",
            [(cid,) for cid, insert in batch.items() if insert],
        )
        db.executemany(
            "DELETE FROM connections WHERE id = ?",
            [(cid,) for cid, insert in batch.items() if not insert],
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def check_journal(path: str) -> None:
    """
    At start-up, before twistd starts anything: the journal opens, is intact
    and writable, and no other process holds it.

    :raises ConfigError: naming the ``journal`` key and the fix.
    """
    try:
        _connect(path).close()
    except JournalError as e:
        raise ConfigError("journal", f"{path!r} {e}") from None


class ThreadWriter:
    """One thread that runs the journal's transactions, one at a time."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="socketdock-journal")

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def __call__(self, work: Callable[[], object]) -> "Deferred[object]":
        return deferToThreadPool(self._reactor, self._pool, work)


class InlineWriter:
    """Runs transactions at once on the caller's thread (unit tests)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def __call__(self, work: Callable[[], object]) -> "Deferred[object]":
        return maybeDeferred(work)


class Journal:
    """
    The connections that still owe a notice.

    :param path: the SQLite file (with ``-wal`` beside it while open).
    :param clock: schedules the flush of each reactor turn's changes.
    :param writer: a L{ThreadWriter} (or L{InlineWriter} in tests).
    :param window: seconds a batch collects changes before it is written
        (0: at the end of the reactor turn).
    """

    _log = Logger()

    def __init__(
        self, path: str, clock: IReactorTime, writer, window: float = BATCH_WINDOW
    ) -> None:
        self.path = path
        self._window = window
        self._clock = clock
        self._writer = writer
        self._db: Optional[sqlite3.Connection] = None
        self._closed = False
        # connection id -> True (insert) / False (delete), not yet written.
        self._pending: dict[str, bool] = {}
        self._call: Optional[IDelayedCall] = None
        self._inflight: Optional[Deferred[None]] = None
        self._failing = False

    def open(self) -> list[str]:
        """
        Open the file at start-up (blocking: nothing else runs yet) and
        return the ids left over by the instance before.

        :raises JournalError: the file cannot be used.
        """
        self._db = _connect(self.path)
        self._writer.start()
        return [row[0] for row in self._db.execute("SELECT id FROM connections")]

    def record(self, connection_id: str) -> None:
        """A connection was accepted: its notice is owed."""
        if self._db is None or self._closed:
            return
        self._pending[connection_id] = True
        self._schedule()

    def forget(self, connection_id: str) -> None:
        """Its notice was delivered."""
        if self._db is None or self._closed:
            return
        if self._pending.get(connection_id) is True:
            # Recorded in this same batch: neither change need reach the disk.
            del self._pending[connection_id]
        else:
            self._pending[connection_id] = False
            self._schedule()

    def pending(self) -> int:
        """Changes not yet on disk (for tests and status)."""
        return len(self._pending)

    def _schedule(self, delay: Optional[float] = None) -> None:
        if self._call is None and self._inflight is None:
            self._call = self._clock.callLater(
                self._window if delay is None else delay, self.flush
            )

    def flush(self) -> None:
        """Write the changes collected so far in one transaction."""
        self._call = None
        if not self._pending or self._inflight is not None or self._db is None:
            return
        batch, self._pending = self._pending, {}
        db = self._db
        d = self._inflight = self._writer(lambda: _apply(db, batch))
        d.addCallbacks(self._written, self._failed, (batch,), None, (batch,))

    def _written(self, _: object, batch: dict[str, bool]) -> None:
        self._inflight = None
        recorded = sum(batch.values())
        self._log.debug(
            "journal: {recorded} recorded, {forgotten} forgotten",
            recorded=recorded, forgotten=len(batch) - recorded,
        )
        if self._failing:
            self._failing = False
            self._log.info("journal {path}: writing again", path=self.path)
        if self._pending and not self._closed:
            self._schedule()

    def _failed(self, failure: Failure, batch: dict[str, bool]) -> None:
        """
        A write error is logged and the batch kept for a retry: the instance
        runs on, its journal behind until the disk takes writes again.
        """
        self._inflight = None
        for cid, insert in batch.items():
            later = self._pending.get(cid)
            if later is None:
                self._pending[cid] = insert
            elif insert and later is False:
                del self._pending[cid]
        if not self._failing:
            self._failing = True
            self._log.error(
                "journal {path}: write failed ({why}); {count} changes kept, "
                "retrying every {delay}s",
                path=self.path, why=failure.getErrorMessage(), count=len(self._pending),
                delay=RETRY_DELAY,
            )
        if not self._closed:
            self._schedule(RETRY_DELAY)

    def close(self) -> "Deferred[None]":
        """
        At a stop: write what is pending, then close the file.  Notices not
        delivered by then stay in the journal for the next start.
        """
        if self._db is None or self._closed:
            return succeed(None)
        self._closed = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        ready: Deferred[None] = Deferred()
        if self._inflight is None:
            ready.callback(None)
        else:
            self._inflight.addBoth(lambda result: ready.callback(None))
        ready.addCallback(lambda _: self._finish())
        return ready

    def _finish(self) -> "Deferred[None]":
        batch, self._pending = self._pending, {}
        db, self._db = self._db, None
        assert db is not None

        def last() -> None:
            try:
                _apply(db, batch)
            finally:
                db.close()

        d = self._writer(last)
        d.addErrback(
            lambda f: self._log.error(
                "journal {path}: last write failed ({why})",
                path=self.path, why=f.getErrorMessage(),
            )
        )
        d.addBoth(lambda _: self._writer.stop())
        return d


class JournalService(Service):
    """
    Opens the journal when the instance starts, before the listeners do, and
    hands the connections it lists to ``recover``; closes it last at a stop.

    :param recover: called once with the ids a crashed instance left behind.
    """

    _log = Logger()

    def __init__(self, journal: Journal, recover: Callable[[list[str]], None]) -> None:
        self._journal = journal
        self._recover = recover

    def startService(self) -> None:
        super().startService()
        try:
            lost = self._journal.open()
        except JournalError as e:
            # Checked at parse time, so this is a race with something else
            # touching the file: run on without it rather than not at all.
            self._log.error("journal {path} {why}; running without a journal",
                            path=self._journal.path, why=str(e))
            return
        self._log.info(
            "journal {path}: {count} connections left by the last run",
            path=self._journal.path, count=len(lost),
        )
        if lost:
            self._recover(lost)

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        return self._journal.close()
