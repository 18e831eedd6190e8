"""
Confirmed sends end to end over loopback (SPEC §9): a real instance, real
Autobahn clients, the twisted.web backend of tests/fakebackend.py.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client

JSON = {"Content-Type": "application/json"}
TEXT = b"text/plain; charset=utf-8"


class ConfirmTestCase(RelayTestCase):
    """A started instance, and a client whose connection id is known."""

    @inlineCallbacks
    def connected(self, *tags, **settings):
        """Start an instance (once) and a client; returns ``(client, connection id)``."""
        if not hasattr(self, "relay"):
            yield self.start(connecturi="{backend}/connect", **settings)
        self.backend.answer_next(
            "connect", Answer(200, json.dumps({"tags": list(tags)}).encode(), JSON)
        )
        client = yield self.client()
        return client, self.backend.connects[-1]["meta"]["connection_id"]

    def send(self, cid, body, confirm="5"):
        url = f"{self.relay.base}/socket/{cid}/send"
        if confirm is not None:
            url += f"?confirm={confirm}"
        return self.backend.post_send(url, body, TEXT)

    def tag_send(self, tag, body, confirm="5"):
        url = f"{self.relay.base}/tags/{tag}/send?confirm={confirm}"
        return self.backend.post_send(url, body, TEXT)

    @inlineCallbacks
    def sent_count(self, cid, count):
        """Wait (by asking the API, no sleep) until ``count`` frames were handed to ``cid``."""
        for _ in range(10000):
            code, _, body = yield self.backend.request("GET", f"{self.relay.base}/socket/{cid}")
            if code != 200 or json.loads(body)["messages_out"] >= count:
                return
        self.fail("the frame was never sent")


def stop_reading(client):
    """The client's TCP stack stops reading: pings stay unread, pongs unsent."""
    client.protocol.transport.pauseProducing()


class ConfirmTests(ConfirmTestCase):
    @inlineCallbacks
    def test_confirmed_send_answers_200_after_the_client_read_it(self):
        """A confirmed send answers 200 OK, and the client has the frame."""
        client, cid = yield self.connected()
        code, body = yield self.send(cid, b"hello")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"hello", False))

    @inlineCallbacks
    def test_many_confirms_share_pings_and_keepalive_keeps_its_own(self):
        """Twenty confirms in flight at once all answer 200 while keepalive pings every 50 ms."""
        client, cid = yield self.connected(ping_interval=0.05, ping_timeout=5)
        results = yield gatherResults([self.send(cid, b"m%d" % i) for i in range(20)])
        self.assertEqual(set(results), {(200, b"OK")})
        # Keepalive waited for its own pongs all along: the client is still here.
        client.send_text("still here")
        (message,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(message["message"], "still here")

    @inlineCallbacks
    def test_client_not_reading_gets_504(self):
        """A client that stops reading (its TCP window fills) gets 504, not 200."""
        client, cid = yield self.connected()
        stop_reading(client)
        for _ in range(4):
            code, _ = yield self.send(cid, b"x" * 1024 * 1024, confirm=None)
            self.assertEqual(code, 200)
        code, body = yield self.send(cid, b"last", confirm="0.5")
        self.assertEqual(code, 504, body)

    @inlineCallbacks
    def test_client_that_closes_first_gives_410(self):
        """A client that drops its connection while a confirm waits gives 410."""
        client, cid = yield self.connected()
        stop_reading(client)
        pending = self.send(cid, b"hello", confirm="30")
        yield self.sent_count(cid, 1)
        client.abort()
        code, body = yield pending
        self.assertEqual(code, 410, body)

    @inlineCallbacks
    def test_unknown_connection_and_bad_confirm(self):
        """An unknown id gives 404; confirm=0, 61, x and a repeated confirm give 400."""
        _, cid = yield self.connected()
        code, _ = yield self.send("0" * 32, b"x")
        self.assertEqual(code, 404)
        for bad in ("0", "61", "x", "nan", "-1", "1&confirm=2"):
            code, body = yield self.send(cid, b"x", confirm=bad)
            self.assertEqual(code, 400, (bad, body))

    @inlineCallbacks
    def test_tag_send_counts_confirmed_unconfirmed_and_gone(self):
        """A confirmed tag send answers {"confirmed", "unconfirmed", "gone"}; 404 for no carrier."""
        reader, _ = yield self.connected("t")
        stalled, _ = yield self.connected("t")
        stop_reading(stalled)
        code, body = yield self.tag_send("t", b"hi", confirm="0.5")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body), {"confirmed": 1, "unconfirmed": 1, "gone": 0})
        self.assertEqual((yield reader.next_message()), (b"hi", False))
        code, _ = yield self.tag_send("nobody", b"hi")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_tag_send_counts_a_client_that_leaves_as_gone(self):
        """A carrier that drops while its confirm waits counts as gone."""
        stalled, cid = yield self.connected("t")
        stop_reading(stalled)
        pending = self.tag_send("t", b"hi", confirm="30")
        yield self.sent_count(cid, 1)
        stalled.abort()
        code, body = yield pending
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body), {"confirmed": 0, "unconfirmed": 0, "gone": 1})


class PendingHandshakeConfirmTests(ConfirmTestCase):
    @inlineCallbacks
    def test_confirm_waits_for_the_handshake(self):
        """A confirmed send made while the handshake waits for the backend answers 200 once the client read it."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, self.relay.ws_url())
        (connect,) = yield self.backend.wait_for("connect", 1)
        sent = self.send(connect["meta"]["connection_id"], b"early", confirm="10")
        self.assertNoResult(sent)
        self.backend.release(self.backend.stalled[0], Answer(200, b"OK"))
        client = yield pending
        self.addCleanup(client.shutdown)
        self.assertEqual((yield sent), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"early", False))

    @inlineCallbacks
    def test_refused_handshake_gives_404(self):
        """A confirmed send held for a handshake the backend then refuses answers 404."""
        yield self.start(connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, self.relay.ws_url())
        (connect,) = yield self.backend.wait_for("connect", 1)
        sent = self.send(connect["meta"]["connection_id"], b"early", confirm="10")
        self.backend.release(self.backend.stalled[0], Answer(403, b"no"))
        yield self.assertFailure(pending, HandshakeRefused)
        code, _ = yield sent
        self.assertEqual(code, 404)
