"""
A closed connection's buffers are freed when it closes, not at the next
full collection (issue 21): with the collector off, nothing in the process
still holds the unsent frames of a client that stopped reading and left.
"""

import gc
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.test_end_to_end import RelayTestCase

#: An odd size no other buffer of the test has.
PAYLOAD = 1_500_001


#: The frame the relay writes for it: a 10-byte header (64-bit length), unmasked.
FRAME = PAYLOAD + 10


def frames_held() -> list[str]:
    """
    The containers (live or garbage awaiting a collection) that hold a bytes
    object made of such frames (one, or several joined), by type name.
    """
    found = []
    for holder in gc.get_objects():
        for ref in gc.get_referents(holder):
            if type(ref) is bytes and len(ref) >= FRAME and len(ref) % FRAME == 0:
                found.append(f"{type(holder).__name__} holds {len(ref)} bytes")
    return found


class ReleaseOnCloseTests(RelayTestCase):
    timeout = 30

    def collector_off(self):
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    @inlineCallbacks
    def test_unsent_frames_freed_without_a_collection(self):
        """Two unsent 1.5 MB frames of a client that left are unreachable, and freed, at once."""
        yield self.start(max_message_size=2 * 1024 * 1024)
        client = yield self.client()
        client.send_text("hi")
        (msg,) = yield self.backend.wait_for("message", 1)
        server: Any  # the RelayServerProtocol: the test reaches into its transport
        (server,) = list(self.relay.service.relay.registry)
        client.protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        client.protocol.transport.pauseProducing()
        del server
        self.collector_off()
        for _ in range(2):
            code, _ = yield self.backend.post_send(
                msg["meta"]["send"], b"x" * PAYLOAD, b"application/octet-stream"
            )
            self.assertEqual(code, 200)
        self.assertTrue(frames_held(), "the unsent frames should be held while the client is open")
        yield client.abort()
        yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(frames_held(), [])
