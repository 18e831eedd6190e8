"""
The map from connection id to the live connection that holds it.

"Live" (SPEC §4) means open or still in a pending handshake: a connection
leaves the registry the moment it starts closing, so the callback API answers
404 for it from then on.  No Autobahn or Twisted imports: the registry is
tested with plain fakes.
"""

from __future__ import annotations

from typing import Iterator, Optional

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class NotLive(Exception):
    """The connection is not live (closed, closing, or its handshake was refused)."""


class OutboundFull(Exception):
    """The client reads too slowly: its unsent bytes passed the limit."""


class IConnection(Interface):
    """One client connection, as the callback API and the relay see it."""

    connection_id = Attribute("The connection's 32-hex-digit id.")

    def deliver(payload: bytes, is_binary: bool) -> "Deferred[None]":
        """
        Send one message to the client.

        Fires once the message is handed to the socket (held, in order, while
        the handshake is pending); fails with L{NotLive} when the connection
        goes away first, or L{OutboundFull} when the client reads too slowly.
        """

    def close(code: int, reason: str, initiator: str) -> None:
        """Start the closing handshake; C{initiator} goes into the notice."""

    def describe() -> dict:
        """The JSON object served by C{GET /socket/<id>}."""


class Registry:
    """
    Live connections by id, plus the lifetime count of those ever registered.
    """

    def __init__(self) -> None:
        self._live: dict[str, IConnection] = {}
        self.lifetime = 0

    def add(self, connection: IConnection) -> None:
        """Register a connection that has just started its handshake."""
        self._live[connection.connection_id] = connection
        self.lifetime += 1

    def discard(self, connection_id: str) -> None:
        """Forget a connection; harmless if it is already gone."""
        self._live.pop(connection_id, None)

    def get(self, connection_id: str) -> Optional[IConnection]:
        """The live connection with this id, or C{None}."""
        return self._live.get(connection_id)

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[IConnection]:
        # A snapshot: callers close connections while iterating.
        return iter(list(self._live.values()))
