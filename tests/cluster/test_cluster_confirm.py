"""Confirmed sends in cluster mode (SPEC §9): through an instance that does not hold the connection."""

import json

from twisted.internet.defer import inlineCallbacks

from tests.cluster.test_cluster import ClusterTestCase


class ConfirmAcrossInstancesTests(ClusterTestCase):
    @inlineCallbacks
    def test_confirm_through_another_instance(self):
        """B forwards a confirmed send to A: 200 once read, 504 from a client not reading, 404 unknown."""
        a = yield self.instance()
        b = yield self.instance()
        client, cid = yield self.client(a, "t")
        code, body = yield self.backend.post_send(f"{b.base}/socket/{cid}/send?confirm=5", b"v")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual((yield client.next_message()), (b"v", False))
        # A tag held only on A, asked through A, is confirmed per connection.
        code, _, body = yield self.api(a, "POST", "/tags/t/send?confirm=5", b"w")
        self.assertEqual(json.loads(body), {"confirmed": 1, "unconfirmed": 0, "gone": 0})
        # Asked through B, the carriers are elsewhere: not supported yet.
        code, _, body = yield self.api(b, "POST", "/tags/t/send?confirm=5", b"w")
        self.assertEqual(code, 501, body)
        client.protocol.transport.pauseProducing()
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{cid}/send?confirm=0.3", b"x")
        self.assertEqual(code, 504)
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{'0' * 32}/send?confirm=1", b"?")
        self.assertEqual(code, 404)
        client.protocol.transport.resumeProducing()
