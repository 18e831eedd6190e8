"""
A client that pipelines requests and never reads the answers (issue 21):
once the answers fill the transport's buffer the listener stops reading
from it, on both stacks, instead of answering (and buffering) without end.
"""

import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import inlineCallbacks

from tests.test_end_to_end import RelayTestCase
from tests.ws.test_early_bytes import until
from tests.ws.test_hardening import raw_exchange

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def unsent(transport):
    """Bytes a TCP transport holds for a peer that is not reading."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class PipeliningTests(RelayTestCase):
    timeout = 30

    @inlineCallbacks
    def test_reading_stops_while_answers_wait(self):
        """20,000 pipelined requests, answers unread: the listener stops reading, answers stay small."""
        yield self.start()
        client = raw_exchange(self.relay.port, REQUEST * 20_000, rcvbuf=4096)
        client.transport.pauseProducing()
        local = client.transport.getHost().port
        server: Any = None

        def server_side():
            nonlocal server
            for reader in reactor.getReaders() + reactor.getWriters():
                if not isinstance(reader, tcp.Server):
                    continue
                if reader.getPeer().port == local:
                    server = reader
                    server.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                    return True
            return False

        yield until(server_side, "the listener never read the connection")
        yield until(
            lambda: server not in reactor.getReaders(),
            "the listener kept reading from a client that reads no answers",
        )
        # At most what one read's requests answered, past the buffer's mark.
        self.assertLess(unsent(server), 2 * 1024 * 1024)
        client.transport.abortConnection()
        yield until(
            lambda: server not in reactor.getReaders() + reactor.getWriters(),
            "the listener kept the connection",
        )
