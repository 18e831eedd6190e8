"""
What happens between a client's socket and the backend, without the socket.

A :class:`Session` is one accepted connection's ordered lane towards the backend:
its messages go out one at a time, in the order sent, and its disconnect
notice goes last, after every earlier message was delivered or given up.
The :class:`Relay` owns the sessions that still have work, so a stop can wait for
them (SPEC §6).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import AUTH_FAILURES, IBackend, MessageRefused, Reply
from socketdock.relay.budget import ByteBudget
from socketdock.relay.confirm import Gone
from socketdock.relay.registry import (
    NOT_OPEN,
    IConnection,
    NotLive,
    OutboundFull,
    Registry,
    SharedFrame,
)
from socketdock.relay.retry import RetriesExhausted
from socketdock.relay.state import parse_details

#: The reason of a notice sent by a restarted instance for a lost connection.
RECOVERED_REASON = "instance restarted after a crash"
#: The reason of a notice a surviving cluster instance sends for a lost one (SPEC §8).
LOST_INSTANCE_REASON = "instance lost: its cluster heartbeat lapsed"


class ISocket(IConnection):
    """
    The client side of a session, as the relay drives it: what the callback API
    may do to a live connection (:class:`IConnection`), plus flow control.
    The session reads ``tags`` for every request to the backend, so a message
    carries the tags it has when it is POSTed.
    """

    def pause_reading() -> None:
        """Stop reading from the client (TCP backpressure)."""

    def resume_reading() -> None:
        """Read from the client again."""


class Session:
    """
    One accepted connection's lane towards the backend.

    :param socket: an :class:`ISocket`; it tells the session what the client sent
        (:meth:`received`) and when the connection ended (:meth:`ended`).
    """

    _log = Logger()

    def __init__(
        self, relay: Relay, connection_id: str, socket: ISocket, recovered: bool = False
    ) -> None:
        self.connection_id = connection_id
        self._recovered = recovered
        self._relay = relay
        self._socket = socket
        self._seq = 0
        self._queue: deque[tuple[int, bytes, bool]] = deque()
        # Bytes of the queued messages and the one in flight, also counted
        # in the relay's budget until delivered or given up.
        self._bytes = 0
        self._inflight_bytes = 0
        self._busy = False
        self._paused = False
        self._waiting_for_room = False
        self._ended: tuple[int | None, str, str] | None = None
        self._gave_up = False
        self._inflight: Deferred[Any] | None = None
        self._abandoned = False

    def __len__(self) -> int:
        """Messages waiting for the backend, the one in flight included."""
        return len(self._queue) + self._busy

    def received(self, payload: bytes, is_binary: bool) -> None:
        """A message from the client: queue it for the backend."""
        if self._gave_up:
            return
        self._seq += 1
        self._queue.append((self._seq, payload, is_binary))
        self._bytes += len(payload)
        self._relay.budget.take(len(payload))
        self._relay.metrics.message_in()
        if not self._paused and self._full():
            self._paused = True
            self._socket.pause_reading()
        self._pump()

    def _full(self) -> bool:
        """
        Whether reading should pause: at ``queue_limit`` messages or
        ``queue_bytes`` bytes, whichever comes first, or with the instance's
        budget used up.
        """
        relay = self._relay
        return (
            len(self) >= relay.queue_limit
            or self._bytes >= relay.queue_bytes
            or relay.budget.over()
        )

    def _maybe_resume(self) -> None:
        if not self._paused or self._gave_up or self._abandoned:
            return
        if not self._full():
            self._paused = False
            self._socket.resume_reading()
        elif self._relay.budget.over() and not self._waiting_for_room:
            # Nothing of ours may be left to deliver: wait for the others.
            self._waiting_for_room = True
            self._relay.budget.when_room(self._room)

    def _room(self) -> None:
        self._waiting_for_room = False
        self._maybe_resume()

    def _release(self, nbytes: int) -> None:
        self._bytes -= nbytes
        self._relay.budget.give(nbytes)

    def ended(self, code: int | None, reason: str, initiator: str) -> None:
        """The connection is gone: send the notice once the queue is done."""
        if self._ended is None:
            self._ended = (code, reason, initiator)
            # The notice may be retried for as long as the process runs:
            # keep its id and tags, not the closed connection and its buffers.
            socket = self._socket
            self._socket = _GoneSocket(self.connection_id, socket.tags, socket.backend_state)
            self._pump()

    def _pump(self) -> None:
        if self._busy:
            return
        if self._queue:
            seq, payload, is_binary = self._queue.popleft()
            self._busy = True
            self._inflight_bytes = len(payload)
            tags = self._socket.tags
            state = self._socket.backend_state
            if state is not None:
                d = self._relay.backend.message(
                    self.connection_id, seq, payload, is_binary, tags=tags, state=state
                )
            elif tags:
                d = self._relay.backend.message(
                    self.connection_id, seq, payload, is_binary, tags=tags
                )
            else:
                # An untagged connection asks exactly what it always asked.
                d = self._relay.backend.message(self.connection_id, seq, payload, is_binary)
            self._inflight = d
            d.addBoth(self._delivered, seq)
        elif self._ended is not None:
            self._busy = True
            code, reason, initiator = self._ended
            extra: dict = {"recovered": True} if self._recovered else {}
            if self._socket.tags:
                extra["tags"] = self._socket.tags
            if self._socket.backend_state is not None:
                extra["state"] = self._socket.backend_state
            notice = self._inflight = self._relay.backend.disconnect(
                self.connection_id, code, reason, initiator, **extra
            )
            notice.addBoth(self._noticed)

    def abandon(self) -> None:
        """The process is stopping: give up the request in flight and its retries."""
        self._abandoned = True
        self._queue.clear()
        self._release(self._bytes)
        if self._inflight is not None:
            self._inflight.cancel()

    def _delivered(self, outcome: object, seq: int) -> None:
        self._busy = False
        self._inflight = None
        if self._abandoned:
            return
        self._release(self._inflight_bytes)
        self._inflight_bytes = 0
        if isinstance(outcome, Reply):
            self._relay.reply(self._socket, outcome)
        elif isinstance(outcome, Failure):
            self._message_failed(outcome, seq)
        self._maybe_resume()
        self._pump()

    def _message_failed(self, failure: Failure, seq: int) -> None:
        if isinstance(failure.value, MessageRefused):
            if failure.value.status in AUTH_FAILURES:
                return  # the backend logs these once a minute, as authentication failures
            self._log.warn(
                "backend refused message {seq} of {connection_id} with HTTP {status}",
                seq=seq,
                connection_id=self.connection_id,
                status=failure.value.status,
            )
            return
        # Retries used up, or something unexpected: the message must not be
        # dropped in silence, and later ones would arrive out of order.
        dropped = len(self._queue)
        self._queue.clear()
        self._release(self._bytes)
        self._gave_up = True
        if isinstance(failure.value, RetriesExhausted):
            self._log.error(
                "backend did not take message {seq} of {connection_id} ({why}); "
                "closing it with 1011, {dropped} later messages not sent",
                seq=seq,
                connection_id=self.connection_id,
                why=failure.value.why,
                dropped=dropped,
            )
        else:
            self._log.failure(
                "delivering message {seq} of {connection_id} failed",
                failure,
                seq=seq,
                connection_id=self.connection_id,
            )
        self._socket.close(1011, "backend unavailable", "backend")

    def _noticed(self, outcome: object) -> None:
        self._busy = False
        self._inflight = None
        if self._abandoned:
            return
        if isinstance(outcome, Failure):
            self._log.failure(
                "disconnect notice for {connection_id} failed",
                outcome,
                connection_id=self.connection_id,
            )
        elif self._relay.journal is not None:
            self._relay.journal.forget(self.connection_id)
        self._relay.finished(self)


class Relay:
    """
    The sessions with work left, the backend they talk to, and the drain.

    :param queue_limit: messages waiting on one connection before reading stops.
    :param journal: records accepted connections until their notice is
        delivered (a :class:`socketdock.relay.journal.Journal`), or None.
    :param queue_bytes: bytes waiting on one connection before reading stops
        (0: no byte bound).
    :param budget: the instance's bytes of queued data, inbound and outbound.
    """

    _log = Logger()

    def __init__(
        self,
        backend: IBackend,
        registry: Registry,
        metrics: Metrics,
        clock: IReactorTime,
        queue_limit: int,
        journal=None,
        queue_bytes: int = 0,
        budget: ByteBudget | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.metrics = metrics
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes or sys.maxsize
        self.budget = budget if budget is not None else ByteBudget()
        self._clock = clock
        self.journal = journal
        self._unfinished: set[Session] = set()
        self._idle_waiters: list[Deferred[None]] = []
        self.draining = False

    def record(self, connection_id: str, details: str = "") -> Deferred[None]:
        """
        A handshake is about to be answered: fires once the journal has the
        connection on disk (at once without a journal), so that a client
        never sees open a connection whose notice a crash could lose.

        :param details: its tags and state (:func:`socketdock.relay.state.details_text`),
            for a recovered notice.
        """
        if self.journal is None:
            return succeed(None)
        if details:
            return self.journal.record(connection_id, details)
        return self.journal.record(connection_id)

    def note(self, connection_id: str, details: str) -> None:
        """A live connection's tags or state changed: the journal keeps them for its notice."""
        if self.journal is not None:
            self.journal.note(connection_id, details)

    def unrecord(self, connection_id: str) -> None:
        """A recorded handshake was not answered after all and owes no notice."""
        if self.journal is not None:
            self.journal.forget(connection_id)

    def open_session(self, connection_id: str, socket: ISocket) -> Session:
        """
        A handshake succeeded (and :meth:`record` put it in the journal): its
        session holds work until the notice is sent.
        """
        session = Session(self, connection_id, socket)
        self._unfinished.add(session)
        self.metrics.connection_opened()
        return session

    def orphan(
        self,
        connection_id: str,
        reason: str,
        initiator: str,
        tags: tuple[str, ...] = (),
        recorded: bool = False,
        state: str | None = None,
    ) -> None:
        """
        The backend admitted a connection whose handshake then did not finish
        (the client left, or we are stopping): it still hears it is gone.

        :param tags: those the connection was given, for the notice.
        :param recorded: :meth:`record` already put it in the journal.
        """
        session = Session(self, connection_id, _GoneSocket(connection_id, tags, state))
        self._unfinished.add(session)
        if self.journal is not None and not recorded:
            # Not when already on disk: a record and a forget in one batch
            # cancel out, which would leave the disk's copy behind.
            self.journal.record(connection_id)
        session.ended(None, reason, initiator)

    def recover(
        self,
        connection_ids: list[str],
        details: Mapping[str, str] | None = None,
        reason: str = RECOVERED_REASON,
    ) -> None:
        """
        Connections a crashed instance left (in the journal, at start-up; in
        Redis, for a lost cluster instance) get their notice (code null,
        initiator server, marked recovered), sent and retried like any other
        and waited for by a drain.

        :param details: by id, the tags and state kept for the notice.
        :param reason: the notice's reason: by default, that this instance
            restarted; :data:`LOST_INSTANCE_REASON` in cluster mode.
        """
        details = details or {}
        for connection_id in connection_ids:
            tags, state = parse_details(details.get(connection_id))
            gone = _GoneSocket(connection_id, tags, state)
            session = Session(self, connection_id, gone, recovered=True)
            self._unfinished.add(session)
            session.ended(None, reason, "server")

    def reply(self, socket: ISocket, reply: Reply) -> None:
        """Hand a backend reply (loopback echo, inline reply) to the client."""
        d = socket.deliver(reply.payload, reply.is_binary)
        d.addErrback(self._reply_lost)

    def _reply_lost(self, failure: Failure) -> None:
        failure.trap(NotLive, OutboundFull)
        assert failure.type is not None  # trap passed: NotLive or OutboundFull
        self._log.info(
            "a reply for a closed or stalled client was dropped ({why})", why=failure.type.__name__
        )

    def finished(self, session: Session) -> None:
        """A session's notice went out: it has no work left."""
        self._unfinished.discard(session)
        if not self._unfinished:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def queued(self) -> int:
        """Messages waiting for the backend, over all connections."""
        return sum(len(s) for s in self._unfinished)

    def unfinished(self) -> int:
        """Connections whose disconnect notice has not been delivered yet."""
        return len(self._unfinished)

    def idle(self) -> Deferred[None]:
        """Fires once no session has work left."""
        if not self._unfinished:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def abandon(self) -> None:
        """After the drain: stop every request still in flight or waiting to retry."""
        for session in list(self._unfinished):
            session.abandon()

    def drain(self, timeout: float) -> Deferred[int]:
        """
        Stop: refuse new handshakes, close every socket with 1001, and wait up
        to ``timeout`` for queued messages and notices.  Fires with how many
        connections' notices were still undelivered.
        """
        self.draining = True
        for connection in self.registry:
            connection.close(1001, "server shutting down", "server")
        d = self.idle()
        d.addTimeout(timeout, self._clock, onTimeoutCancel=lambda *_: None)
        return d.addCallback(lambda _: self.unfinished())


@implementer(ISocket)
class _GoneSocket:
    """Stands in for a client that left before its handshake completed."""

    def __init__(
        self, connection_id: str, tags: tuple[str, ...] = (), state: str | None = None
    ) -> None:
        self.connection_id = connection_id
        self.tags = tags
        self.backend_state = state

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        return fail(NotLive())

    def deliver_frame(self, frame: SharedFrame) -> int:
        return NOT_OPEN

    def confirm(self, timeout: float) -> Deferred[None]:
        return fail(Gone())

    def close(self, code: int, reason: str, initiator: str) -> None:
        pass

    def describe(self) -> dict:
        return {"connection_id": self.connection_id, "tags": list(self.tags)}

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
