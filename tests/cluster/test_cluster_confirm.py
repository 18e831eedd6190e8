"""Confirmed sends and tag listings in cluster mode (SPEC §9), through any instance."""

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
        client.protocol.transport.pauseProducing()
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{cid}/send?confirm=0.3", b"x")
        self.assertEqual(code, 504)
        code, _ = yield self.backend.post_send(f"{b.base}/socket/{'0' * 32}/send?confirm=1", b"?")
        self.assertEqual(code, 404)
        client.protocol.transport.resumeProducing()

    @inlineCallbacks
    def test_tag_confirm_counts_every_instance(self):
        """A confirmed tag send through C counts the carriers on A and B, each once."""
        a = yield self.instance()
        b = yield self.instance()
        c = yield self.instance()
        on_a, _ = yield self.client(a, "t")
        on_b, _ = yield self.client(b, "t")
        stalled, _ = yield self.client(b, "t")
        stalled.protocol.transport.pauseProducing()
        code, _, body = yield self.api(c, "POST", "/tags/t/send?confirm=0.5", b"w")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body), {"confirmed": 2, "unconfirmed": 1, "gone": 0})
        self.assertEqual((yield on_a.next_message()), (b"w", False))
        self.assertEqual((yield on_b.next_message()), (b"w", False))
        code, _, _ = yield self.api(c, "POST", "/tags/nobody/send?confirm=1", b"w")
        self.assertEqual(code, 404)
        stalled.protocol.transport.resumeProducing()

    @inlineCallbacks
    def test_tag_listing_walks_every_instance(self):
        """GET /tags/t/connections through C, one entry a page, lists each carrier on A and B once, naming its instance."""
        a = yield self.instance()
        b = yield self.instance()
        c = yield self.instance()
        expected = {}
        for relay in (a, b, b):
            _, cid = yield self.client(relay, "t")
            expected[cid] = relay.base
        yield self.client(a, "other")
        seen: dict[str, str] = {}
        cursor = None
        for _ in range(10):
            path = "/tags/t/connections?limit=1" + (f"&cursor={cursor}" if cursor else "")
            code, _, body = yield self.api(c, "GET", path)
            self.assertEqual(code, 200, body)
            page = json.loads(body)
            for entry in page["connections"]:
                self.assertNotIn(entry["connection_id"], seen)
                seen[entry["connection_id"]] = entry["instance"]
                self.assertEqual(entry["tags"], ["t"])
            cursor = page["cursor"]
            if cursor is None:
                break
        self.assertEqual(seen, expected)
        code, _, _ = yield self.api(c, "GET", "/tags/t/connections?cursor=bad!")
        self.assertEqual(code, 400)
