"""
The handshake's door on the WebSocket side: the refusals that cost nothing,
made before the backend is asked, and the count of handshakes waiting for
its answer (``pending_handshakes``).

The order of the checks is part of the behaviour: the rate counts every
handshake an address attempts, whatever becomes of it, so it comes first;
the relay's own door (stopping, full) comes before the count of waiting
handshakes; an extension offer Autobahn could not parse is refused last,
before the backend hears of the client (:func:`~socketdock.ws.refusal.bad_extension_offer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from socketdock.relay.admission import Admissions, Entry, Refused
from socketdock.relay.session import ISocket
from socketdock.ws.origins import OriginPolicy
from socketdock.ws.ratelimit import HandshakeRate
from socketdock.ws.refusal import bad_extension_offer


class RateLimited(Refused):
    """Refused for its address's handshake rate: the answer says when to retry."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(429, "too many handshakes from this address", "rate")
        self.retry_after = retry_after


class Gate:
    """
    Whether a handshake may ask the backend, and an
    :class:`~socketdock.relay.admission.Entry` for each that may.

    :param max_pending: handshakes waiting for the backend's answer at once
        (0: no limit); :attr:`pending` counts them.
    :param rate: the per-address handshake rate, or None for none.
    """

    def __init__(
        self,
        admissions: Admissions,
        origins: OriginPolicy = OriginPolicy(["*"]),
        rate: HandshakeRate | None = None,
        max_pending: int = 0,
    ) -> None:
        self._admissions = admissions
        self._origins = origins
        self._rate = rate
        self._max_pending = max_pending
        self.pending = 0

    def enter(
        self,
        socket: ISocket,
        peer: Callable[[], object],
        origin: str | None,
        extensions: Sequence[tuple[str, object]],
    ) -> Entry | Refused:
        """
        A handshake asks to connect: its entry, counted as pending until
        :meth:`answered`, or why it is refused.

        :param peer: the client's address (asked only when there is a rate).
        """
        rate = self._rate
        if rate is not None:
            host = getattr(peer(), "host", None)
            if host is not None and not rate.allow(host):
                return RateLimited(rate.retry_after)
        if origin and not self._origins.allows(origin):
            return Refused(403, "origin not allowed", "origin")
        closed = self._admissions.closed()
        if closed is not None:
            return closed
        if self._max_pending and self.pending >= self._max_pending:
            return Refused(503, "too many handshakes waiting", "pending")
        bad_offer = bad_extension_offer(extensions)
        if bad_offer is not None:
            return Refused(400, bad_offer, "bad_request")
        entry = self._admissions.enter(socket)
        self.pending += 1
        return entry

    def answered(self, result: object) -> object:
        """A connect notice was answered (or failed): one handshake less waits."""
        self.pending -= 1
        return result
