"""
The pure wire-format helpers; plain unittest, no ACA-Py needed
(``python -m twisted.trial socketdock_acapy`` or ``python -m unittest``).
"""

import base64
import json
import unittest

from socketdock_acapy.wire import (
    DELIVERED,
    GONE,
    REFUSED,
    RETRY,
    BadRequest,
    BadSignature,
    Notice,
    SeqFilter,
    retry_after,
    send_outcome,
    sign,
    verify_signature,
)

BODY = b'{"meta": {"connection_id": "ab", "seq": 1}, "message": "hi"}'


class SignatureTests(unittest.TestCase):
    def test_good(self):
        verify_signature("s3cret", sign("s3cret", BODY, now=1000), BODY, now=1000)

    def test_known_vector(self):
        # HMAC-SHA256("k", "1700000000." + body), computed independently.
        import hashlib
        import hmac

        mac = hmac.new(b"k", b"1700000000." + BODY, hashlib.sha256).hexdigest()
        verify_signature("k", f"t=1700000000,v1={mac}", BODY, now=1700000000)
        self.assertEqual(sign("k", BODY, now=1700000000), f"t=1700000000,v1={mac}")

    def test_window_edges(self):
        header = sign("s", BODY, now=1000)
        verify_signature("s", header, BODY, now=1300)
        verify_signature("s", header, BODY, now=700)
        with self.assertRaises(BadSignature):
            verify_signature("s", header, BODY, now=1301)
        with self.assertRaises(BadSignature):
            verify_signature("s", header, BODY, now=699)

    def test_wrong_secret_or_body(self):
        header = sign("s", BODY, now=1000)
        with self.assertRaises(BadSignature):
            verify_signature("other", header, BODY, now=1000)
        with self.assertRaises(BadSignature):
            verify_signature("s", header, BODY + b" ", now=1000)

    def test_missing_or_malformed(self):
        for header in (None, "", "garbage", "t=abc,v1=00", "t=1000", "v1=00", "t=-5,v1=00"):
            with self.subTest(header=header), self.assertRaises(BadSignature):
                verify_signature("s", header, BODY, now=1000)

    def test_any_of_several_v1(self):
        good = sign("s", BODY, now=1000).split("v1=")[1]
        verify_signature("s", f"t=1000,v1={'0' * 64},v1={good}", BODY, now=1000)
        verify_signature("s", f"t=1000, v1={good.upper()}", BODY, now=1000)

    def test_bytes_secret(self):
        verify_signature(b"s", sign("s", BODY, now=5), BODY, now=5)


class NoticeTests(unittest.TestCase):
    def parse(self, doc):
        return Notice.parse(json.dumps(doc).encode())

    def test_message(self):
        n = self.parse(
            {"meta": {"connection_id": "c1", "send": "http://sd/socket/c1/send",
                      "disconnect": "http://sd/socket/c1/disconnect", "seq": 3,
                      "tags": ["did:x"]},
             "message": "{}"}
        )
        self.assertEqual((n.connection_id, n.seq, n.message, n.binary), ("c1", 3, "{}", False))
        self.assertEqual(n.send, "http://sd/socket/c1/send")
        self.assertEqual(n.tags, ("did:x",))

    def test_binary_utf8_and_base64(self):
        n = self.parse({"meta": {"connection_id": "c", "binary": True}, "message": "x"})
        self.assertEqual((n.message, n.binary), ("x", True))
        raw = b"\xff\x00\x80"
        n = self.parse({"meta": {"connection_id": "c", "binary": True, "encoding": "base64"},
                        "message": base64.b64encode(raw).decode()})
        self.assertEqual(n.message, raw)

    def test_disconnect(self):
        n = self.parse({"connection_id": "c",
                        "meta": {"connection_id": "c", "code": None, "reason": "",
                                 "initiator": "client", "recovered": True}})
        self.assertEqual((n.code, n.initiator, n.recovered, n.message), (None, "client", True, None))
        n = self.parse({"connection_id": "c", "meta": {"connection_id": "c", "code": 1000}})
        self.assertEqual(n.code, 1000)

    def test_connect(self):
        n = self.parse({"meta": {"connection_id": "c", "send": "s", "disconnect": "d",
                                 "headers": {"origin": "o"}}})
        self.assertEqual((n.send, n.seq, n.message), ("s", None, None))

    def test_bad(self):
        for body in (b"not json", b"[]", b'{"message": "x"}', b'{"meta": {}}',
                     b'{"meta": {"connection_id": "c", "seq": "1"}}',
                     b'{"meta": {"connection_id": "c", "seq": true}}',
                     b'{"meta": {"connection_id": "c"}, "message": 5}',
                     b'{"meta": {"connection_id": "c", "encoding": "base64"}, "message": "!!"}',
                     b'{"meta": {"connection_id": "c", "encoding": "rot13"}, "message": "x"}',
                     b"\xff"):
            with self.subTest(body=body), self.assertRaises(BadRequest):
                Notice.parse(body)


class SeqFilterTests(unittest.TestCase):
    def test_in_order_and_retries(self):
        f = SeqFilter()
        self.assertEqual([f.take(s) for s in (1, 2, 2, 3, 1, 3, 4)],
                         [True, True, False, True, False, False, True])

    def test_no_seq_always_taken(self):
        f = SeqFilter()
        self.assertTrue(f.take(None))
        self.assertTrue(f.take(None))
        self.assertTrue(f.take(1))

    def test_give_back_lets_the_retry_in(self):
        f = SeqFilter()
        self.assertTrue(f.take(1))
        self.assertTrue(f.take(2))
        f.give_back(2)
        self.assertTrue(f.take(2))
        self.assertFalse(f.take(2))
        f.give_back(1)  # not the latest: no effect
        self.assertFalse(f.take(2))


class OutcomeTests(unittest.TestCase):
    def test_statuses(self):
        self.assertEqual(send_outcome(200), DELIVERED)
        self.assertEqual(send_outcome(None), GONE)
        self.assertEqual(send_outcome(404), GONE)
        self.assertEqual(send_outcome(503), RETRY)
        self.assertEqual(send_outcome(429), RETRY)
        self.assertEqual(send_outcome(413), REFUSED)
        self.assertEqual(send_outcome(401), REFUSED)

    def test_retry_after(self):
        self.assertEqual(retry_after("2", 0.1), 2.0)
        self.assertEqual(retry_after(None, 0.1), 0.1)
        self.assertEqual(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 0.5), 0.5)
        self.assertEqual(retry_after("999", 0.1), 30.0)
