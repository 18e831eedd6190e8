"""
How many frames one client message may arrive in.

Autobahn keeps each fragment of a message as its own bytes object: a message
of one-byte continuation frames cost ~50 times its size, and seconds of CPU
for a few megabytes.  A message may arrive in :data:`FREE_FRAGMENTS` frames of
any size; past those its frames must bring :data:`MIN_AVERAGE_FRAGMENT` bytes
each on average, else the client is closed with 1008 before Autobahn has kept
thousands of tiny fragments.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.logger import Logger

#: Frames a message may arrive in whatever their size.
FREE_FRAGMENTS = 1024
#: Past those, the average payload a frame must bring: the per-frame cost
#: (a bytes object, a parse) then stays a fraction of the data's own, as for
#: a message of that size.  (Autobahn|Testsuite's 9.3.1 sends 4 MiB in
#: 64-byte frames; one-byte frames are an attack.)
MIN_AVERAGE_FRAGMENT = 64


def too_fragmented(frames: int, size: int) -> bool:
    """Whether ``frames`` frames bringing ``size`` bytes so far are too many for one message."""
    return frames > FREE_FRAGMENTS and size < MIN_AVERAGE_FRAGMENT * (frames - FREE_FRAGMENTS)


class FragmentLimit(WebSocketServerProtocol):
    """
    The limit, as Autobahn hooks of a server protocol (mixed into
    :class:`~socketdock.ws.protocol.RelayServerProtocol`).

    Its hooks call Autobahn's by name, as the protocol's mixins all do
    (:class:`~socketdock.ws.protocol.RelayServerProtocol` says why).
    """

    _log: Logger
    connection_id: str

    def __init__(self) -> None:
        super().__init__()
        # The current message's frames and payload bytes so far.
        self._fragments = 0
        self._fragment_bytes = 0

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        self._fragment_bytes = 0
        WebSocketServerProtocol.onMessageBegin(self, isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        self._fragments += 1
        self._fragment_bytes += length
        if too_fragmented(self._fragments, self._fragment_bytes) and not self.failedByMe:
            self._log.info(
                "client {connection_id} sent a message in fragments of {average} bytes on "
                "average past the first {free}; closing it",
                connection_id=self.connection_id,
                average=self._fragment_bytes // self._fragments,
                free=FREE_FRAGMENTS,
            )
            # Autobahn's _fail_connection would log a second line.
            self.failedByMe = True
            self.sendCloseFrame(
                code=1008, reasonUtf8=b"message in too many fragments", isReply=False
            )
            self.dropConnection(abort=False)
            return
        WebSocketServerProtocol.onMessageFrameBegin(self, length)
