"""
The map from connection id to the live connection that holds it, and the
index from tag to the live connections that carry it (SPEC §8).

"Live" (SPEC §4) means open or still in a pending handshake: a connection
leaves the registry the moment it starts closing, so the callback API answers
404 for it from then on.  No Autobahn or Twisted imports: the registry is
tested with plain fakes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from socketdock.relay.reach import IConnectionEvents, NoEvents
from socketdock.relay.state import details_text
from socketdock.relay.tags import merged


class NotLive(Exception):
    """The connection is not live (closed, closing, or its handshake was refused)."""


class OutboundFull(Exception):
    """The client reads too slowly: its unsent bytes passed the limit."""

    #: The one-line reason of the 503 answer.
    why = "client is not reading; retry later"


class BudgetFull(OutboundFull):
    """The instance's bytes of queued data are at ``max_queued_bytes``."""

    why = "server has too much data queued; retry later"


class SharedFrame:
    """
    One message sent to many carriers (a tag send): each connection's
    :meth:`IConnection.deliver_frame` encodes it on first use and keeps the
    encoding here, so the frame header and payload are built once per send,
    not once per carrier.
    """

    __slots__ = ("at", "encoded", "is_binary", "payload")

    def __init__(self, payload: bytes, is_binary: bool) -> None:
        self.payload = payload
        self.is_binary = is_binary
        #: The WebSocket layer's encoding, set by the first carrier that sends it.
        self.encoded: object = None
        #: When it was handed to the sockets (the reactor's clock, read once).
        self.at: float | None = None


#: What :meth:`IConnection.deliver_frame` answers.
SENT, FULL, NOT_OPEN = 0, 1, 2


class IConnection(Interface):
    """One client connection, as the callback API and the relay see it."""

    connection_id = Attribute("The connection's 32-hex-digit id.")
    tags = Attribute(
        "The tags it carries, a tuple in the order added; set only by the "
        ":class:`Registry`, and kept once it stops being live (for the notice)."
    )
    backend_state = Attribute(
        "The backend's state for it as compact JSON text, or None when never set "
        "(SPEC §9); set only by the :class:`Registry` once live, kept for the notice."
    )

    def deliver(payload: bytes, is_binary: bool) -> Deferred[None]:
        """
        Send one message to the client.

        Fires once the message is handed to the socket (held, in order, while
        the handshake is pending); fails with :class:`NotLive` when the connection
        goes away first, or :class:`OutboundFull` when the client reads too slowly.
        """

    def deliver_frame(frame: SharedFrame) -> int:
        """
        Hand one shared message to the socket of an open connection, with no
        Deferred: :data:`SENT`, :data:`FULL` (the client reads too slowly,
        as :class:`OutboundFull`), or :data:`NOT_OPEN` (pending or gone: the
        caller uses :meth:`deliver`).
        """

    def confirm(timeout: float) -> Deferred[None]:
        """
        Fire once the client proves it read every frame handed to the socket
        so far (SPEC §9); fail with :class:`socketdock.relay.confirm.Unconfirmed`
        after ``timeout`` seconds, :class:`socketdock.relay.confirm.Gone` when
        the connection closes first.
        """

    def close(code: int, reason: str, initiator: str) -> None:
        """Start the closing handshake; ``initiator`` goes into the notice."""

    def describe() -> dict:
        """The JSON object served by ``GET /socket/<id>``."""


class Registry:
    """
    Live connections by id and by tag.  (The lifetime count of connections
    is :class:`socketdock.ops.metrics.Metrics`'s, of handshakes completed.)

    A connection leaves every index in :meth:`discard`, the one way out, so a
    closed connection cannot linger under a tag.

    :param events: told of every change, for a cluster to publish.
    :param noted: told a live connection's tags and state
        (:func:`socketdock.relay.state.details_text`) whenever either changes,
        for the journal to keep for its notice.
    """

    def __init__(
        self,
        events: IConnectionEvents = NoEvents(),
        noted: Callable[[str, str], None] | None = None,
    ) -> None:
        self._live: dict[str, IConnection] = {}
        self._by_tag: dict[str, set[str]] = {}
        self._events = events
        self._noted = noted
        # For listing (SPEC §9): each connection's number, increasing in the
        # order they were added, and those numbers in order (deleted lazily).
        self._count = 0
        self._number: dict[str, int] = {}
        self._order: list[int] = []
        self._at: dict[int, str] = {}

    def add(self, connection: IConnection) -> None:
        """Register a connection that has just started its handshake."""
        self._live[connection.connection_id] = connection
        self._count += 1
        self._number[connection.connection_id] = self._count
        self._order.append(self._count)
        self._at[self._count] = connection.connection_id
        self._events.connection_added(connection.connection_id)

    def discard(self, connection_id: str) -> None:
        """Forget a connection and drop it from every tag; harmless if it is already gone."""
        connection = self._live.pop(connection_id, None)
        if connection is None:
            return
        del self._at[self._number.pop(connection_id)]
        if len(self._order) > 64 and len(self._order) > 2 * len(self._at):
            self._order = [n for n in self._order if n in self._at]
        self._unindex(connection_id, connection.tags)
        self._events.connection_gone(connection_id, connection.tags)

    def retag(
        self, connection_id: str, add: Sequence[str], remove: Sequence[str], note: bool = True
    ) -> tuple[str, ...]:
        """
        Change a live connection's tags (removals first), all or nothing.

        :param note: tell ``noted``; False for the connect answer's tags,
            which the journal's record of the connection carries anyway.

        :returns: its tags now.
        :raises NotLive: no such live connection.
        :raises socketdock.relay.reach.InvalidTags: more than 64 tags would result.
        """
        connection = self._live.get(connection_id)
        if connection is None:
            raise NotLive()
        before = connection.tags
        after = merged(before, add, remove)
        if after == before:
            return after
        added = [t for t in after if t not in before]
        removed = [t for t in before if t not in after]
        connection.tags = after
        self._unindex(connection_id, removed)
        for tag in added:
            self._by_tag.setdefault(tag, set()).add(connection_id)
        if added or removed:
            self._events.tags_changed(connection_id, added, removed)
        if note:
            self._note(connection)
        return after

    def set_state(self, connection_id: str, state: str) -> None:
        """
        Replace a live connection's state (compact JSON text, checked).

        :raises NotLive: no such live connection.
        """
        connection = self._live.get(connection_id)
        if connection is None:
            raise NotLive()
        connection.backend_state = state
        self._note(connection)

    def _note(self, connection: IConnection) -> None:
        if self._noted is not None:
            self._noted(
                connection.connection_id, details_text(connection.tags, connection.backend_state)
            )

    def _unindex(self, connection_id: str, tags: Sequence[str]) -> None:
        for tag in tags:
            holders = self._by_tag.get(tag)
            if holders is not None:
                holders.discard(connection_id)
                if not holders:
                    del self._by_tag[tag]

    def page(
        self, after: int, limit: int, tag: str | None = None
    ) -> tuple[list[IConnection], int | None]:
        """
        Up to ``limit`` live connections (those carrying ``tag``, if given)
        in the order they were added, from the first one numbered above
        ``after``.  A connection live for a whole walk of pages appears in
        exactly one of them, however many come and go meanwhile: numbers only
        increase.

        :returns: the page and the number to pass as ``after`` for the next
            one, or None when this page is the last.
        """
        if tag is not None:
            numbers = sorted(self._number[i] for i in self._by_tag.get(tag, ()))
        else:
            numbers = self._order
        found: list[IConnection] = []
        last = after
        for index in range(bisect.bisect_right(numbers, after), len(numbers)):
            number = numbers[index]
            connection_id = self._at.get(number)
            if connection_id is None:
                continue  # gone; its number is dropped lazily
            if len(found) == limit:
                return found, last
            found.append(self._live[connection_id])
            last = number
        return found, None

    def tagged(self, tag: str) -> list[IConnection]:
        """The live connections carrying ``tag`` (a snapshot: callers close them)."""
        return [self._live[i] for i in self._by_tag.get(tag, ())]

    def carriers(self, tag: str) -> int:
        """How many live connections carry ``tag``."""
        return len(self._by_tag.get(tag, ()))

    def tag_count(self) -> int:
        """How many distinct tags live connections carry."""
        return len(self._by_tag)

    def get(self, connection_id: str) -> IConnection | None:
        """The live connection with this id, or ``None``."""
        return self._live.get(connection_id)

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[IConnection]:
        # A snapshot: callers close connections while iterating.
        return iter(list(self._live.values()))
