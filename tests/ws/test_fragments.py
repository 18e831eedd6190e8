"""
A message may arrive in 1,024 frames of any size, and in more only while
its frames bring 64 bytes each on average past those (issue 21): else the
client is closed with 1008, before Autobahn has kept thousands of tiny
fragments, and its notice says so once.
"""

import os
import struct

from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent

from socketdock.ws.fragments import too_fragmented
from tests.test_end_to_end import RelayTestCase
from tests.ws.test_hardening import LogCaptureMixin, raw_exchange, upgrade_request


def fragment(opcode, payload, fin):
    """One masked client frame of up to 125 bytes, FIN set or not."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload)) + mask + body


def fragmented(payload, count):
    """A text message split into ``count`` frames (the last takes the rest)."""
    frames = [fragment(0x1, payload[:1], count == 1)]
    for i in range(1, count):
        last = i == count - 1
        frames.append(fragment(0x0, payload[i : i + 1] if not last else payload[i:], last))
    return b"".join(frames)


class FragmentTests(RelayTestCase, LogCaptureMixin):
    timeout = 30

    def test_limit(self):
        """1,024 frames of any size; past them, 64 bytes a frame on average."""
        self.assertFalse(too_fragmented(1024, 1024))
        self.assertTrue(too_fragmented(1041, 1041))
        self.assertFalse(too_fragmented(65536, 65536 * 64))
        self.assertTrue(too_fragmented(65536, 65536 * 62))

    @inlineCallbacks
    def test_at_the_limit_is_delivered(self):
        """A message in exactly max_fragments frames reaches the backend whole."""
        yield self.start()
        client = raw_exchange(self.relay.port, upgrade_request())
        head = yield client.head
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        payload = b"0123456789abcdef" * 64 + b"tail"
        client.transport.write(fragmented(payload, 1024))
        (msg,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(msg["message"], payload.decode("ascii"))

    @inlineCallbacks
    def test_many_64_byte_fragments_are_delivered(self):
        """4,096 frames of 64 bytes (Autobahn|Testsuite's 9.3.1, smaller) reach the backend whole."""
        yield self.start()
        client = raw_exchange(self.relay.port, upgrade_request())
        head = yield client.head
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        payload = b"0123456789abcdef" * 4 * 4096
        frames = [fragment(0x1, payload[:64], False)]
        for i in range(1, 4096):
            frames.append(fragment(0x0, payload[64 * i : 64 * (i + 1)], i == 4095))
        client.transport.write(b"".join(frames))
        (msg,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(msg["message"], payload.decode("ascii"))

    @inlineCallbacks
    def test_one_byte_fragments_close_with_1008(self):
        """A message of one-byte frames is refused at frame 1,041: close 1008, one log line."""
        events = self.capture_log()
        yield self.start()
        client = raw_exchange(self.relay.port, upgrade_request())
        head = yield client.head
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        client.transport.write(fragmented(b"x" * 100_000, 100_000))
        answer = yield client.answered
        # The close frame: 1008 and the reason, unmasked from the server.
        close = answer[len(head) :]
        self.assertEqual(close[:2], b"\x88" + bytes([2 + len(b"message in too many fragments")]))
        self.assertEqual(struct.unpack("!H", close[2:4])[0], 1008)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1008, "server"))
        self.assertEqual(self.backend.messages, [])
        lines = [
            formatEvent(e)
            for e in events
            if "fragments" in formatEvent(e) or "failing WebSocket" in formatEvent(e)
        ]
        self.assertEqual(len(lines), 1, lines)
