"""The backend's state on a connection, end to end on one instance (SPEC §9)."""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakebackend import Answer
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client

JSON = {"Content-Type": "application/json"}


class StateTests(RelayTestCase):
    @inlineCallbacks
    def admitted(self, answer: bytes):
        """A client admitted with this connect answer, and its id."""
        self.backend.answer_next("connect", Answer(200, answer, JSON))
        client = yield self.client()
        return client, self.backend.connects[-1]["meta"]["connection_id"]

    def post_state(self, cid, body: bytes):
        return self.backend.post_send(
            f"{self.relay.base}/socket/{cid}/state", body, b"application/json"
        )

    @inlineCallbacks
    def test_state_on_every_message_and_the_notice(self):
        """The connect answer's state, then the one POSTed, ride on messages and the notice."""
        yield self.start(connecturi="{backend}/connect")
        client, cid = yield self.admitted(b'{"tags": ["t"], "state": {"user": "u1", "n": [1]}}')
        client.send_text("one")
        (first,) = yield self.backend.wait_for("message", 1)
        self.assertEqual(first["meta"]["state"], {"user": "u1", "n": [1]})
        self.assertEqual(first["meta"]["tags"], ["t"])
        code, body = yield self.post_state(cid, b' "just text" ')
        self.assertEqual((code, json.loads(body)), (200, {"state": "just text"}))
        client.send_text("two")
        _, second = yield self.backend.wait_for("message", 2)
        self.assertEqual(second["meta"]["state"], "just text")
        code, _ = yield self.post_state(cid, b"null")
        self.assertEqual(code, 200)
        yield client.close(1000)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertIn("state", notice["meta"])
        self.assertIsNone(notice["meta"]["state"])
        self.assertEqual(notice["meta"]["tags"], ["t"])

    @inlineCallbacks
    def test_never_set_means_no_key(self):
        """A connection whose state was never set has no state key anywhere."""
        yield self.start()
        client = yield self.client()
        client.send_text("one")
        (message,) = yield self.backend.wait_for("message", 1)
        self.assertNotIn("state", message["meta"])
        yield client.close(1000)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertNotIn("state", notice["meta"])

    @inlineCallbacks
    def test_bad_state_requests(self):
        """404 unknown id, 400 not JSON, 413 over 4096 bytes compact (but a padded body is fine)."""
        yield self.start(connecturi="{backend}/connect")
        _, cid = yield self.admitted(b"{}")
        code, _ = yield self.post_state("0" * 32, b"{}")
        self.assertEqual(code, 404)
        code, _ = yield self.post_state(cid, b"{nope")
        self.assertEqual(code, 400)
        code, _ = yield self.post_state(cid, json.dumps("x" * 4095).encode())
        self.assertEqual(code, 413)
        code, _ = yield self.post_state(cid, json.dumps("x" * 4094).encode())
        self.assertEqual(code, 200)
        padded = b"[" + b" " * 10000 + b"1]"
        code, body = yield self.post_state(cid, padded)
        self.assertEqual((code, body), (200, b'{"state":[1]}'))

    @inlineCallbacks
    def test_oversized_connect_state_refuses_the_handshake(self):
        """A connect answer whose state is over 4096 bytes refuses with 503; the backend hears the notice."""
        yield self.start(connecturi="{backend}/connect")
        big = json.dumps({"state": "x" * 5000}).encode()
        self.backend.answer_next("connect", Answer(200, big, JSON))
        failure = yield self.assertFailure(
            connect_client(reactor, self.relay.ws_url()), HandshakeRefused
        )
        self.assertEqual(failure.status, 503)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["initiator"], "server")
