"""
Bytes a client sends after its upgrade request, while admission (the
backend, the journal) decides.

Autobahn would append them to its buffer, copying it each time, and look
for the end of a request header in it again.  Kept aside here instead;
past ``limit`` (one largest frame) the client waits, unread.
"""

from __future__ import annotations

from typing import Any


class EarlyBytes:
    """
    What one pending handshake's client sent early.

    :param transport: paused past ``limit``, resumed once the handshake opens.
    """

    def __init__(self, transport: Any, limit: int) -> None:
        self._transport = transport
        self._limit = limit
        self._chunks: list[bytes] = []
        self.size = 0
        self._paused = False

    def keep(self, data: bytes) -> None:
        """Keep ``data`` aside; past the limit, stop reading."""
        self._chunks.append(data)
        self.size += len(data)
        if self.size > self._limit and not self._paused:
            self._paused = True
            self._transport.pauseProducing()

    def end(self, opened: bool) -> bytes:
        """
        Admission ended: the bytes to hand to Autobahn if the handshake
        opened (reading resumes), none if it did not.
        """
        chunks, self._chunks, self.size = self._chunks, [], 0
        if self._paused:
            self._paused = False
            transport, self._transport = self._transport, None
            if opened and transport is not None:
                transport.resumeProducing()
        return b"".join(chunks) if opened else b""
