"""
A tag send's frame is encoded once and shared by every carrier (SPEC §8),
over loopback with a real instance and real Autobahn clients: each carrier
gets the exact message, text and binary, and a carrier that does not read is
skipped and counted once its unsent bytes pass the bound (SPEC §4).
"""

import json

from twisted.internet.defer import inlineCallbacks

from socketdock.ws.factory import RelayServerFactory
from tests.test_confirm_end_to_end import stop_reading
from tests.test_tags_end_to_end import TagTestCase

BINARY = b"application/octet-stream"


class FanOutTests(TagTestCase):
    def count_prepared(self):
        """Count the frames the instance encodes for a tag send."""
        prepared = []
        original = RelayServerFactory.prepareMessage

        def counting(factory, payload, isBinary=False, doNotCompress=False):
            prepared.append(payload)
            return original(factory, payload, isBinary, doNotCompress)

        self.patch(RelayServerFactory, "prepareMessage", counting)
        return prepared

    def send(self, tag, body, content_type=b"text/plain; charset=utf-8"):
        return self.backend.post_send(f"{self.relay.base}/tags/{tag}/send", body, content_type)

    @inlineCallbacks
    def test_every_carrier_gets_the_exact_frame(self):
        """Six carriers get a text, a binary and a 70,000-byte frame exactly, each encoded once for all."""
        yield self.start(connecturi="{backend}/connect")
        clients = []
        for _ in range(6):
            client, _ = yield self.tagged_client("all")
            clients.append(client)
        other, _ = yield self.tagged_client("other")
        prepared = self.count_prepared()
        messages = [
            ("héllo ✓".encode(), b"text/plain; charset=utf-8", False),
            (bytes(range(256)) * 3, BINARY, True),
            (b"x" * 70000, BINARY, True),  # a 64-bit length in the header
        ]
        for body, content_type, _ in messages:
            code, answer = yield self.send("all", body, content_type)
            self.assertEqual((code, json.loads(answer)), (200, {"connections": 6}))
        self.assertEqual(prepared, [body for body, _, _ in messages])
        for client in clients:
            for body, _, is_binary in messages:
                self.assertEqual((yield client.next_message()), (body, is_binary))
        other.send_text("still mine")
        (message,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(message["message"], "still mine")  # and it got no tag frame

    @inlineCallbacks
    def test_carrier_not_reading_is_bounded(self):
        """A carrier that stops reading is skipped and counted as full; the reading one gets every frame."""
        max_size = 65536
        yield self.start(connecturi="{backend}/connect", max_message_size=max_size)
        reader, _ = yield self.tagged_client("t")
        stalled, stalled_id = yield self.tagged_client("t")
        stop_reading(stalled)
        frame = b"y" * max_size
        answers = []
        for _ in range(2000):  # far more than the socket buffers hold
            code, body = yield self.send("t", frame, BINARY)
            self.assertEqual(code, 200)
            answers.append(json.loads(body))
            if answers[-1].get("full"):
                break
        self.assertEqual(answers[-1], {"connections": 1, "full": 1})
        _, _, body = yield self.api("GET", f"/socket/{stalled_id}")
        handed = json.loads(body)["messages_out"]
        # From now on every send skips it: nothing more is queued for it.
        for _ in range(5):
            code, body = yield self.send("t", frame, BINARY)
            self.assertEqual(json.loads(body), {"connections": 1, "full": 1})
        _, _, body = yield self.api("GET", f"/socket/{stalled_id}")
        self.assertEqual(json.loads(body)["messages_out"], handed)
        for _ in range(len(answers) + 5):
            self.assertEqual((yield reader.next_message()), (frame, True))
