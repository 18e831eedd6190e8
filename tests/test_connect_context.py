"""The connect notice's context (SPEC §9): path, query, remote, and forward_headers."""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.test_end_to_end import RelayTestCase
from tests.wsclient import connect_client

HEADERS = {"X-Test": "1", "Cookie": "session=s", "Authorization": "Bearer t"}


class ConnectContextTests(RelayTestCase):
    @inlineCallbacks
    def connect_notice(self, path):
        client = yield connect_client(reactor, self.relay.ws_url(path), headers=HEADERS)
        self.addCleanup(client.shutdown)
        return self.backend.connects[-1]["meta"]

    @inlineCallbacks
    def test_path_query_and_remote(self):
        """meta carries path, query (without ?) and remote as GET /socket/<id> shows it."""
        yield self.start(connecturi="{backend}/connect")
        meta = yield self.connect_notice("/ws?token=abc&x=%20")
        self.assertEqual((meta["path"], meta["query"]), ("/ws", "token=abc&x=%20"))
        code, _, body = yield self.backend.request(
            "GET", f"{self.relay.base}/socket/{meta['connection_id']}"
        )
        self.assertEqual(code, 200)
        self.assertEqual(meta["remote"], json.loads(body)["remote"])
        self.assertIn("127.0.0.1", meta["remote"])

    @inlineCallbacks
    def test_no_query_key_when_empty_and_all_headers_by_default(self):
        """Without a query string there is no query key; by default every header, Cookie and Authorization included."""
        yield self.start(connecturi="{backend}/connect")
        meta = yield self.connect_notice("/ws")
        self.assertNotIn("query", meta)
        self.assertEqual(meta["path"], "/ws")
        for name, value in HEADERS.items():
            self.assertEqual(meta["headers"][name.lower()], value)
        self.assertIn("host", meta["headers"])

    @inlineCallbacks
    def test_forward_headers_limits_them(self):
        """forward_headers = X-TEST, authorization passes only those two, whatever their case."""
        yield self.start(connecturi="{backend}/connect", forward_headers="X-TEST, authorization")
        meta = yield self.connect_notice("/ws")
        self.assertEqual(meta["headers"], {"x-test": "1", "authorization": "Bearer t"})
