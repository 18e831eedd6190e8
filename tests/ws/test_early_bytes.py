"""
Bytes a client sends after its upgrade request, while the backend decides
whether to admit it (issue 21): kept aside up to one largest frame, then the
connection is not read until the handshake is answered; nothing is lost.
"""

import os
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase
from tests.ws.test_hardening import raw_exchange, upgrade_request


def masked_text_frame(payload: bytes) -> bytes:
    """A client text frame (FIN, masked) of any length."""
    mask = os.urandom(4)
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
        len(payload), "big"
    )
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + mask + body


@inlineCallbacks
def until(condition, why, tries=500):
    """Poll ``condition`` every 10 ms, a bounded number of times."""
    for _ in range(tries):
        if condition():
            return
        yield deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(why)


class EarlyBytesTests(RelayTestCase):
    timeout = 30

    @inlineCallbacks
    def test_reading_stops_past_one_frame_while_admission_is_pending(self):
        """
        Two 900 kB messages sent before the 101: the relay reads a little
        over one frame's worth (1 MB + 14) and stops; once admitted both
        reach the backend in order.
        """
        size = 1024 * 1024
        yield self.start(max_message_size=size, connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        first, second = b"a" * 900_000, b"b" * 900_000
        client = raw_exchange(
            self.relay.port,
            upgrade_request() + masked_text_frame(first) + masked_text_frame(second),
        )
        yield self.backend.wait_for("connect", 1)
        server: Any
        (server,) = list(self.relay.service.relay.registry)
        yield until(
            lambda: server.transport not in reactor.getReaders(),
            "the relay kept reading while admission was pending",
        )
        # At most one read (64 KiB) past the bound.
        self.assertLessEqual(server._early.size, size + 14 + 65536)
        self.backend.release(self.backend.stalled[0], Answer(200, b""))
        head = yield client.head
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        messages = yield self.backend.wait_for("message", 2)
        self.assertEqual([m["message"] for m in messages], [first.decode(), second.decode()])
        client.transport.loseConnection()
        yield self.backend.wait_for("disconnect", 1)
