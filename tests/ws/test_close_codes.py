"""
Close codes a server sends (1001, 1009) reach the client and the backend's
notice, found with the reference harness's edge cases.
"""

from twisted.internet.defer import inlineCallbacks

from tests.test_end_to_end import RelayTestCase


class ServerCloseCodeTests(RelayTestCase):
    @inlineCallbacks
    def test_stop_closes_open_client_with_1001(self):
        """Stopping the instance closes an open client with 1001 and the notice says so."""
        yield self.start()
        client = yield self.client()
        client.send_text("hi")
        yield self.backend.wait_for("message", 1)
        yield self.relay.service.stopService()
        _, code, _ = yield client.closed
        self.assertEqual(code, 1001)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (1001, "server"))

    @inlineCallbacks
    def test_oversized_message_notice_carries_text_reason(self):
        """A message over max_message_size closes with 1009 and the notice's reason is text."""
        yield self.start(max_message_size=16)
        client = yield self.client()
        client.send_text("x" * 64)
        _, code, _ = yield client.closed
        self.assertEqual(code, 1009)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(notice["meta"]["code"], 1009)
        self.assertIsInstance(notice["meta"]["reason"], str)
        self.assertIn("exceeds", notice["meta"]["reason"])
