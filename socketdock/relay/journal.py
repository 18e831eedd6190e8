"""
The journal: which accepted connections still owe the backend a disconnect
notice, kept in a small SQLite file so that it survives a crash (SPEC §6).

A connection is recorded when it is accepted and forgotten once its notice
was delivered; whatever is left when an instance starts was lost by the one
before it, and gets a notice marked ``recovered``.

A client must never see open a connection that a crash could forget, so
the handshake is answered only once the record is on disk: :meth:`Journal.record`
returns a Deferred that fires after the commit holding it.  Writes never
block the reactor: they run on a single writer thread, one transaction at a
time (a group commit).  A change made while no transaction runs starts one at
once; changes made while one runs collect and go together in the next, so a
busy instance commits larger batches rather than more of them, and no timer
delays a quiet one.  A record followed by its forget in the same batch never
reaches the disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

#: Seconds between attempts while the disk refuses writes.
RETRY_DELAY = 1.0

#: Version 2 added ``details``: a connection's tags and state for its
#: recovered notice (SPEC §9); a version 1 file gains the column when opened.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS connections "
    "(id TEXT PRIMARY KEY, details TEXT NOT NULL DEFAULT '') WITHOUT ROWID"
)
_VERSION = 2

#: A change waiting for the disk: insert (with details), update the details
#: of a row already there, or delete.
_INSERT, _UPDATE, _DELETE = "insert", "update", "delete"
Change = tuple[str, str]


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
        columns = [row[1] for row in db.execute("PRAGMA table_info(connections)")]
        if "details" not in columns:
            db.execute("ALTER TABLE connections ADD COLUMN details TEXT NOT NULL DEFAULT ''")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise JournalError(
                f"is corrupt ({verdict}); move it aside (its connections are "
                "lost) or point journal at a new file"
            )
        db.execute(f"PRAGMA user_version = {_VERSION}")
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
        return f"is in use by another process ({text}); give each instance its own journal file"
    if "readonly" in text or "unable to open" in text:
        return (
            f"cannot be opened for writing ({text}); make its directory exist "
            "and be writable by the user SocketDock runs as"
        )
    return f"cannot be used ({text}); fix the file or point journal elsewhere"


def _apply(db: sqlite3.Connection, batch: dict[str, Change]) -> None:
    """Write one batch in one transaction (on the writer thread)."""
    if not batch:
        return
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT OR REPLACE INTO connections (id, details) VALUES (?, ?)",
            [(cid, details) for cid, (op, details) in batch.items() if op == _INSERT],
        )
        db.executemany(
            "UPDATE connections SET details = ? WHERE id = ?",
            [(details, cid) for cid, (op, details) in batch.items() if op == _UPDATE],
        )
        db.executemany(
            "DELETE FROM connections WHERE id = ?",
            [(cid,) for cid, (op, _) in batch.items() if op == _DELETE],
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

    :raises JournalError: one line naming the file and the fix (``tap`` says
        it of the ``journal`` key, as it does any configuration mistake).
    """
    try:
        _connect(path).close()
    except JournalError as e:
        raise JournalError(f"{path!r} {e}") from None


class ThreadWriter:
    """One thread that runs the journal's transactions, one at a time."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="socketdock-journal")

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def __call__(self, work: Callable[[], object]) -> Deferred[object]:
        return deferToThreadPool(self._reactor, self._pool, work)


class Journal:
    """
    The connections that still owe a notice.

    :param path: the SQLite file (with ``-wal`` beside it while open).
    :param clock: schedules the retries while the disk refuses writes.
    :param writer: a :class:`ThreadWriter` (tests run transactions inline).
    """

    _log = Logger()

    def __init__(self, path: str, clock: IReactorTime, writer) -> None:
        self.path = path
        self._clock = clock
        self._writer = writer
        self._db: sqlite3.Connection | None = None
        self._closed = False
        # connection id -> the change not yet written.
        self._pending: dict[str, Change] = {}
        #: What the last run left: connection id -> its details (see :meth:`open`).
        self.left: dict[str, str] = {}
        # Fired once the batch collecting in _pending is on disk.
        self._waiters: list[Deferred[None]] = []
        self._retry: IDelayedCall | None = None
        self._inflight: Deferred[None] | None = None
        self._failing = False

    def open(self) -> list[str]:
        """
        Open the file at start-up (blocking: nothing else runs yet) and
        return the ids left over by the instance before.

        :raises JournalError: the file cannot be used.
        """
        self._db = _connect(self.path)
        self._writer.start()
        rows = self._db.execute("SELECT id, details FROM connections").fetchall()
        self.left = {cid: details for cid, details in rows if details}
        return [cid for cid, _ in rows]

    def record(self, connection_id: str, details: str = "") -> Deferred[None]:
        """
        A connection was accepted: its notice is owed.  Fires once that is
        on disk; at once when there is no usable journal, and also while the
        disk refuses writes (the error is logged; the instance runs on with
        its journal behind rather than refusing every client).

        :param details: its tags and state, for a recovered notice.
        """
        if self._db is None:
            return succeed(None)
        self._pending[connection_id] = (_INSERT, details)
        if self._failing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        self._start()
        return d

    def note(self, connection_id: str, details: str) -> None:
        """
        A recorded connection's tags or state changed.  Not waited for: a
        crash in between loses only the change.  Ignored for one not
        recorded (yet): its record carries them.
        """
        if self._db is None:
            return
        op, _ = self._pending.get(connection_id, (_UPDATE, ""))
        if op == _DELETE:
            return
        self._pending[connection_id] = (op, details)
        self._start()

    def forget(self, connection_id: str) -> None:
        """Its notice was delivered."""
        if self._db is None:
            return
        if self._pending.get(connection_id, ("", ""))[0] == _INSERT:
            # Recorded in this same batch: neither change need reach the disk.
            del self._pending[connection_id]
        else:
            self._pending[connection_id] = (_DELETE, "")
            self._start()

    def pending(self) -> int:
        """Changes not yet on disk (for tests and status)."""
        return len(self._pending)

    def _start(self) -> None:
        """
        Commit now unless a commit runs (the next batch waits for it), a
        retry is due, or a stop is under way (its last write takes the rest).
        """
        if self._inflight is None and self._retry is None and not self._closed:
            self.flush()

    def flush(self) -> None:
        """Write the changes collected so far in one transaction."""
        self._retry = None
        if self._inflight is not None or self._db is None:
            return
        batch, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, []
        if not batch:
            # Recorded and forgotten before any commit: nothing to wait for.
            _release(waiters)
            return
        db = self._db
        d = self._inflight = self._writer(lambda: _apply(db, batch))
        d.addCallbacks(self._written, self._failed, (batch, waiters), None, (batch, waiters))

    def _written(self, _: object, batch: dict[str, Change], waiters: list) -> None:
        self._inflight = None
        recorded = sum(op == _INSERT for op, _ in batch.values())
        self._log.debug(
            "journal: {recorded} recorded, {forgotten} forgotten",
            recorded=recorded,
            forgotten=sum(op == _DELETE for op, _ in batch.values()),
        )
        updated = sum(op == _UPDATE for op, _ in batch.values())
        if updated:
            self._log.debug("journal: {updated} updated", updated=updated)
        if self._failing:
            self._failing = False
            self._log.info("journal {path}: writing again", path=self.path)
        if (self._pending or self._waiters) and not self._closed:
            # The next batch goes to the writer thread before this one's
            # handshakes are answered, so the two overlap.
            self.flush()
        _release(waiters)

    def _failed(self, failure: Failure, batch: dict[str, Change], waiters: list) -> None:
        """
        A write error is logged and the batch kept for a retry: the instance
        runs on, its journal behind until the disk takes writes again.
        """
        self._inflight = None
        for cid, change in batch.items():
            later = self._pending.get(cid)
            if later is None:
                self._pending[cid] = change
            elif change[0] == _INSERT and later[0] == _DELETE:
                del self._pending[cid]
            elif change[0] == _INSERT and later[0] == _UPDATE:
                # The insert never happened: it goes again, with the newer details.
                self._pending[cid] = (_INSERT, later[1])
        if not self._failing:
            self._failing = True
            self._log.error(
                "journal {path}: write failed ({why}); {count} changes kept, "
                "retrying every {delay}s",
                path=self.path,
                why=failure.getErrorMessage(),
                count=len(self._pending),
                delay=RETRY_DELAY,
            )
        waiters += self._waiters
        self._waiters = []
        if not self._closed:
            self._retry = self._clock.callLater(RETRY_DELAY, self.flush)
        _release(waiters)

    def close(self) -> Deferred[None]:
        """
        At a stop: write what is pending, then close the file.  Notices not
        delivered by then stay in the journal for the next start.  Changes
        made while a commit still runs go in the last write.
        """
        if self._db is None or self._closed:
            return succeed(None)
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        ready: Deferred[None] = Deferred()
        if self._inflight is None:
            ready.callback(None)
        else:
            self._inflight.addBoth(lambda result: ready.callback(None))
        ready.addCallback(lambda _: self._finish())
        return ready

    def _finish(self) -> Deferred[None]:
        batch, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, []
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
                path=self.path,
                why=f.getErrorMessage(),
            )
        )
        d.addBoth(lambda _: _release(waiters))
        d.addBoth(lambda _: self._writer.stop())
        return d


def _release(waiters: list[Deferred[None]]) -> None:
    for d in waiters:
        d.callback(None)


class JournalService(Service):
    """
    Opens the journal when the instance starts, before the listeners do, and
    hands the connections it lists to ``recover``; closes it last at a stop.

    :param recover: called once with the ids a crashed instance left behind
        and, by id, the tags and state it kept for their notices.
    """

    _log = Logger()

    def __init__(
        self, journal: Journal, recover: Callable[[list[str], dict[str, str]], None]
    ) -> None:
        self._journal = journal
        self._recover = recover

    def startService(self) -> None:
        super().startService()
        try:
            lost = self._journal.open()
        except JournalError as e:
            # Checked at parse time, so this is a race with something else
            # touching the file: run on without it rather than not at all.
            self._log.error(
                "journal {path} {why}; running without a journal",
                path=self._journal.path,
                why=str(e),
            )
            return
        self._log.info(
            "journal {path}: {count} connections left by the last run",
            path=self._journal.path,
            count=len(lost),
        )
        if lost:
            self._recover(lost, self._journal.left)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._journal.close()
