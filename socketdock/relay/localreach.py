"""
:class:`IReach` within one instance: the answers come from the registry, and a
request for an id or tag this instance does not hold finds nobody (SPEC §8,
without ``cluster``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.relay.confirm import Tally, confirm_all, deliver_confirmed
from socketdock.relay.listing import BadCursor, local_cursor, local_page
from socketdock.relay.reach import InvalidTags, IReach, Reached
from socketdock.relay.registry import (
    FULL,
    NOT_OPEN,
    SENT,
    IConnection,
    NotLive,
    OutboundFull,
    Registry,
    SharedFrame,
)


@implementer(IReach)
class LocalReach:
    """
    Reach this instance's live connections, by id or by tag.

    :param registry: the live connections and their tag index.
    :param instance: this instance's name, for listings.
    """

    _log = Logger()

    def __init__(self, registry: Registry, instance: Callable[[], str] = lambda: "") -> None:
        self._registry = registry
        self._instance = instance

    def here_only(self) -> LocalReach:
        return self

    def send_to_connection(self, connection_id: str, payload: bytes, is_binary: bool):
        # The hot path: the connection's own Deferred (fired at once when it
        # is open), which the API answers in the same call.
        connection = self._registry.get(connection_id)
        if connection is None:
            return fail(NotLive())
        return connection.deliver(payload, is_binary)

    def confirm_to_connection(
        self, connection_id: str, payload: bytes, is_binary: bool, timeout: float
    ) -> Deferred[None]:
        connection = self._registry.get(connection_id)
        if connection is None:
            return fail(NotLive())
        return deliver_confirmed(connection, payload, is_binary, timeout)

    def close_connection(self, connection_id: str, code: int, reason: str):
        connection = self._registry.get(connection_id)
        if connection is None:
            return fail(NotLive())
        connection.close(code, reason, "backend")
        return succeed(None)

    def describe_connection(self, connection_id: str):
        connection = self._registry.get(connection_id)
        if connection is None:
            return fail(NotLive())
        return succeed(connection.describe())

    def change_tags(self, connection_id: str, add: Sequence[str], remove: Sequence[str]):
        try:
            return succeed(self._registry.retag(connection_id, add, remove))
        except (NotLive, InvalidTags):
            return fail()

    def send_to_tag(self, tag: str, payload: bytes, is_binary: bool) -> Deferred[Reached]:
        counts = [0, 0, 0]  # by outcome: SENT, FULL, NOT_OPEN (skipped)
        frame = SharedFrame(payload, is_binary)
        for connection in self._registry.tagged(tag):
            outcome = connection.deliver_frame(frame)
            if outcome == NOT_OPEN:
                outcome = self._deliver_otherwise(connection, payload, is_binary)
            counts[outcome] += 1
        return succeed(Reached(connections=counts[SENT], full=counts[FULL]))

    def _deliver_otherwise(self, connection: IConnection, payload: bytes, is_binary: bool) -> int:
        """A carrier not open: held while its handshake is pending (SENT), else skipped."""
        d = connection.deliver(payload, is_binary)
        outcome: list = []
        d.addBoth(outcome.append)
        if not outcome:
            # Held until its handshake completes; if that is refused the
            # frame goes with it, as for a single send nobody waits on.
            d.addErrback(self._held_lost, connection.connection_id)
            return SENT
        if not isinstance(outcome[0], Failure):
            return SENT
        if outcome[0].check(OutboundFull):
            return FULL
        if not outcome[0].check(NotLive):
            self._log.failure(
                "tag send to {connection_id} failed",
                outcome[0],
                connection_id=connection.connection_id,
            )
        return NOT_OPEN

    def _held_lost(self, failure: Failure, connection_id: str) -> None:
        failure.trap(NotLive, OutboundFull)
        self._log.info(
            "a tag send held for {connection_id} was dropped: its handshake "
            "did not complete or its client is not reading",
            connection_id=connection_id,
        )

    def set_state(self, connection_id: str, state: str) -> Deferred[str]:
        try:
            self._registry.set_state(connection_id, state)
        except NotLive:
            return fail()
        return succeed(state)

    def confirm_to_tag(
        self, tag: str, payload: bytes, is_binary: bool, timeout: float, everywhere: bool = True
    ) -> Deferred[Tally]:
        return confirm_all(self._registry.tagged(tag), payload, is_binary, timeout)

    def list_tag(
        self, tag: str, cursor: str | None, limit: int, everywhere: bool = True
    ) -> Deferred[dict]:
        try:
            after = local_cursor(cursor)
        except BadCursor:
            return fail()
        return succeed(local_page(self._registry, tag, after, limit, self._instance()))

    def close_tag(self, tag: str, code: int, reason: str) -> Deferred[Reached]:
        closing = self._registry.tagged(tag)
        for connection in closing:
            connection.close(code, reason, "backend")
        return succeed(Reached(connections=len(closing)))

    def count_tag(self, tag: str) -> Deferred[Reached]:
        return succeed(Reached(connections=self._registry.carriers(tag)))
