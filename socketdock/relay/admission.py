"""
One connection's life in the relay, from "asked to connect" to "closed and
notified", whatever carries its frames (:mod:`socketdock.ws.protocol` only
translates between frames and an :class:`Entry`).

An entry is one connection's state machine::

    pending --(backend admits)--> open --(either side closes)--> closed
       \\--(refused, client gone)------------------------------/

It is registered (live) from the moment its handshake starts until it starts
closing; sends that arrive while it is pending are held and delivered, in
order, as soon as it opens.  A backend that admitted a connection whose
handshake then did not finish still hears it is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketdock.relay.backend import Admission, ConnectRefused, UnusableAdmission
from socketdock.relay.reach import InvalidTags
from socketdock.relay.registry import NotLive
from socketdock.relay.session import ISocket, Relay, Session
from socketdock.relay.state import details_text
from socketdock.relay.wire import new_connection_id

PENDING, OPEN, CLOSED = "pending", "open", "closed"

#: Sends a payload now: ``(payload, is_binary, d)``, ``d`` fired once written.
SendNow = Callable[[bytes, bool, "Deferred[None]"], object]


class Refused(Exception):
    """
    A handshake is refused: ``status`` and ``why`` for the HTTP answer,
    ``label`` for the refusals metric.
    """

    def __init__(self, status: int, why: str, label: str) -> None:
        super().__init__(status, why, label)
        self.status = status
        self.why = why
        self.label = label


class Admissions:
    """
    The relay's door: whether a handshake may ask the backend at all, and an
    :class:`Entry` for each one that may.

    :param max_connections: live connections allowed (0: no limit).
    """

    def __init__(self, relay: Relay, max_connections: int = 0) -> None:
        self._relay = relay
        self.max_connections = max_connections

    def closed(self) -> Refused | None:
        """Why no handshake may start now (stopping, or full), or None."""
        if self._relay.draining:
            return Refused(503, "server shutting down", "draining")
        if self.max_connections and len(self._relay.registry) >= self.max_connections:
            return Refused(503, "too many connections", "capacity")
        return None

    def enter(self, socket: ISocket) -> Entry:
        """A handshake starts: ``socket`` gets an id and is live from now on."""
        return Entry(self._relay, socket, new_connection_id())


class Entry:
    """
    One connection, as the relay sees it.

    :param socket: the client side; its ``connection_id`` is set here, its
        ``tags`` and ``backend_state`` by the answer and the registry.
    """

    _log = Logger()

    def __init__(self, relay: Relay, socket: ISocket, connection_id: str) -> None:
        self._relay = relay
        self._socket = socket
        self.connection_id = connection_id
        socket.connection_id = connection_id
        self.state = PENDING
        self.session: Session | None = None
        self.closed_by: tuple[int | None, str, str] | None = None
        self._refusal: ConnectRefused | None = None
        self._refusal_label: str | None = None
        self._held: list[tuple[bytes, bool, Deferred[None]]] = []
        relay.registry.add(socket)

    # -- asked to connect ------------------------------------------------------

    def connect(
        self,
        headers: Mapping[str, str],
        protocols: Sequence[str],
        context: Mapping[str, str],
        answered: Callable[[object], object] = lambda result: result,
    ) -> Deferred[str | None]:
        """
        Ask the backend; fires with the subprotocol to select once the
        connection is admitted and journaled, or fails with :class:`Refused`.

        :param answered: called with the backend's answer, before anything else.
        """
        d = self._relay.backend.connect(self.connection_id, headers, protocols, context=context)
        d.addBoth(answered)
        d.addCallbacks(self._admit, self._refuse)
        return d  # type: ignore[return-value]  # now fires with the subprotocol

    def _admit(self, admission: Admission):
        if self._given_up(admission, recorded=False):
            return self._refused_now()
        socket = self._socket
        if admission.tags:
            try:
                # Not noted: the record made below carries them.
                self._relay.registry.retag(self.connection_id, admission.tags, (), note=False)
            except InvalidTags as e:
                # Tags the backend set through the callback API while the
                # handshake was pending, plus these, pass the limit.
                self._log.warn(
                    "backend admitted {connection_id} with unusable tags ({why})",
                    connection_id=self.connection_id,
                    why=str(e),
                )
                return self._refuse(
                    Failure(UnusableAdmission("backend answered with unusable tags"))
                )
        if admission.state is not None:
            socket.backend_state = admission.state
        # The answer waits until the journal has the connection on disk
        # (no wait without a journal), with or without a connect notice.
        d = self._relay.record(self.connection_id, details_text(socket.tags, socket.backend_state))
        d.addCallback(self._open_session, admission)
        return d

    def _open_session(self, _: None, admission: Admission) -> str | None:
        if self._given_up(admission, recorded=True):
            return self._refused_now()
        self.session = self._relay.open_session(self.connection_id, self._socket)
        return admission.subprotocol

    def _given_up(self, admission: Admission, recorded: bool) -> bool:
        """
        Whether the client left, or we were stopped, while the backend was
        deciding or the journal writing: a backend that admitted it still
        hears it is gone.
        """
        relay = self._relay
        if not (self.state == CLOSED or self._refusal is not None or relay.draining):
            return False
        if relay.backend.admits:
            socket = self._socket
            tags = tuple(dict.fromkeys(socket.tags + admission.tags))
            state = admission.state if admission.state is not None else socket.backend_state
            if self.state == CLOSED:
                reason, initiator = "client left during the handshake", "client"
            else:
                reason, initiator = "server shutting down", "server"
            relay.orphan(
                self.connection_id, reason, initiator, tags, recorded=recorded, state=state
            )
        elif recorded:
            relay.unrecord(self.connection_id)
        if self._refusal is None:
            self._refusal = ConnectRefused(503, "server shutting down")
            self._refusal_label = "draining"
        return True

    def _refuse(self, failure: Failure):
        if not isinstance(failure.value, ConnectRefused):
            self._log.failure(
                "admission of {connection_id} failed", failure, connection_id=self.connection_id
            )
            self._refusal = ConnectRefused(503, "backend unavailable")
        else:
            self._refusal = failure.value
            if isinstance(failure.value, UnusableAdmission):
                # The backend said yes: it hears the connection is gone.
                self._relay.orphan(
                    self.connection_id, failure.value.why, "server", self._socket.tags
                )
        return self._refused_now()

    def _refused_now(self):
        refusal = self._refusal
        assert refusal is not None
        self._relay.registry.discard(self.connection_id)
        self._fail_held()
        raise Refused(refusal.status, refusal.why, self._refusal_label or "backend")

    # -- held sends ------------------------------------------------------------

    def hold(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        """A send before the connection is open: held until it opens, or refused."""
        if self.state == PENDING and self._refusal is None and self.closed_by is None:
            d: Deferred[None] = Deferred()
            self._held.append((payload, is_binary, d))
            return d
        return fail(NotLive())

    def opened(self, send_now: SendNow) -> None:
        """The handshake was answered: the held sends go out, in order."""
        self.state = OPEN
        held, self._held = self._held, []
        for payload, is_binary, d in held:
            send_now(payload, is_binary, d)

    def _fail_held(self) -> None:
        held, self._held = self._held, []
        for _, _, d in held:
            d.errback(NotLive())

    # -- closed and notified ---------------------------------------------------

    def close(self, code: int, reason: str, initiator: str) -> bool:
        """
        Closing starts (the API, a drain, a lifetime): whether a close frame
        is due now; a pending handshake is refused once admission ends.
        """
        if self.closed_by is not None or self.state == CLOSED:
            return False
        self.closed_by = (code, reason, initiator)
        self._relay.registry.discard(self.connection_id)
        if self.state == PENDING:
            self._refusal = ConnectRefused(503, reason)
            self._fail_held()
            return False
        return True

    def client_closing(self, code: int | None, reason: str) -> None:
        """The client started the closing handshake (1005: its frame had no code)."""
        if self.closed_by is None:
            self.closed_by = (1005 if code is None else code, reason, "client")
            self._relay.registry.discard(self.connection_id)

    def handshake_failed(self, why: str) -> None:
        """
        The answer could not be written after all: if the backend admitted
        it, :meth:`ended` sends the disconnect notice.
        """
        if self.session is not None and self.closed_by is None:
            self.closed_by = (None, "handshake failed: " + why, "server")
            self._relay.registry.discard(self.connection_id)

    def ended(self, failed_with: tuple[int, str] | None) -> tuple[int | None, str] | None:
        """
        The connection is gone: the notice goes to the backend.  Returns the
        notice's code and initiator when the connection had opened, else None.

        :param failed_with: the code and reason the connection was failed
            with by its transport's protocol (a protocol error, 1009), if so.
        """
        state, self.state = self.state, CLOSED
        self._relay.registry.discard(self.connection_id)
        self._fail_held()
        if state == PENDING:
            if self.session is not None:
                # Admitted but never opened (the handshake failed, or the
                # client left once it was admitted): the backend still hears.
                code, reason, initiator = self.closed_by or (
                    None,
                    "client left during the handshake",
                    "client",
                )
                self.session.ended(code, reason, initiator)
            return None
        if self.closed_by is None:
            if failed_with is not None:
                self.closed_by = (failed_with[0], failed_with[1], "server")
            else:
                self.closed_by = (None, "", "client")
        code, reason, initiator = self.closed_by
        self._relay.metrics.connection_closed(code)
        if self.session is not None:
            self.session.ended(code, reason, initiator)
        return code, initiator
