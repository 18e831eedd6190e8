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
    SeenSignatures,
    SeqFilter,
    parse_trusted_urls,
    retry_after,
    send_outcome,
    sign,
    trusted_send_url,
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

    def test_hostile_timestamps_and_macs(self):
        """Thousands of digits, non-ASCII digits or MACs: BadSignature, nothing else."""
        good = sign("s", BODY, now=1000).split("v1=")[1]
        for header in (
            "t=" + "9" * 5000 + ",v1=" + good,
            "t=" + "1" * 12 + ",v1=" + good,
            "t=\u0661\u0660\u0660\u0660,v1=" + good,  # Arabic-Indic 1000
            "t=1000,v1=" + "\u00e9" * 64,
            "t=1000,v2=" + "\u00e9" * 64,
        ):
            with self.subTest(header=header[:30]), self.assertRaises(BadSignature):
                verify_signature("s", header, BODY, now=1000, method="POST", target="/message")


class SignatureV2Tests(unittest.TestCase):
    """v2 signs the method and the request target too."""

    def test_known_vector(self):
        import hashlib
        import hmac

        v1 = hmac.new(b"k", b"1700000000." + BODY, hashlib.sha256).hexdigest()
        v2 = hmac.new(b"k", b"1700000000.POST /message\n" + BODY, hashlib.sha256).hexdigest()
        header = sign("k", BODY, now=1700000000, method="POST", target="/message")
        self.assertEqual(header, f"t=1700000000,v1={v1},v2={v2}")

    def test_route_bound(self):
        header = sign("s", BODY, now=1000, method="POST", target="/message")
        verify_signature("s", header, BODY, now=1000, method="POST", target="/message")
        for method, target in [("POST", "/disconnect"), ("PUT", "/message"), ("POST", "/message?x")]:
            with self.subTest(target=target), self.assertRaises(BadSignature):
                verify_signature("s", header, BODY, now=1000, method=method, target=target)

    def test_v1_only_still_verifies(self):
        """An older SocketDock sends v1 alone; without the route, v1 is checked."""
        verify_signature("s", sign("s", BODY, now=1000), BODY, now=1000, method="POST", target="/x")
        header = sign("s", BODY, now=1000, method="POST", target="/message")
        verify_signature("s", header, BODY, now=1000)

    def test_same_key_for_v1_and_v2(self):
        """What names a signed request does not change when v2 is stripped from it."""
        header = sign("s", BODY, now=1000, method="POST", target="/message")
        both = verify_signature("s", header, BODY, now=1000, method="POST", target="/message")
        v1 = verify_signature("s", header.rsplit(",v2=", 1)[0], BODY, now=1000)
        self.assertEqual(both, v1)


class SeenSignaturesTests(unittest.TestCase):
    def test_claim_once_release_and_forget(self):
        seen = SeenSignatures(window=300, limit=3)
        self.assertTrue(seen.claim("a", now=0))
        self.assertFalse(seen.claim("a", now=1))
        seen.release("a")
        self.assertTrue(seen.claim("a", now=2))
        self.assertFalse(seen.claim("a", now=600))  # still within two windows of its arrival
        self.assertTrue(seen.claim("a", now=603))  # forgotten: its timestamp is out of the window
        for key in "bcd":
            seen.claim(key, now=604)
        self.assertEqual(len(seen._seen), 3)  # bounded


class TrustedURLTests(unittest.TestCase):
    BASES = ("http://10.0.0.5:8765", "https://sd.example/base/")

    def test_trusted(self):
        for url in [
            "http://10.0.0.5:8765/socket/ab12/send",
            "HTTP://10.0.0.5:8765/socket/ab12/send",
            "https://SD.example:443/base/socket/ab12/send",
        ]:
            self.assertTrue(trusted_send_url(url, "ab12", self.BASES), url)

    def test_untrusted(self):
        for url, cid in [
            ("http://10.0.0.6:8765/socket/ab12/send", "ab12"),
            ("http://10.0.0.5:8766/socket/ab12/send", "ab12"),
            ("https://10.0.0.5:8765/socket/ab12/send", "ab12"),
            ("http://10.0.0.5:8765/socket/ab13/send", "ab12"),
            ("http://10.0.0.5:8765/socket/ab12/send?x", "ab12"),
            ("http://10.0.0.5:8765/socket/ab12/send#x", "ab12"),
            ("http://u:p@10.0.0.5:8765/socket/ab12/send", "ab12"),
            ("http://10.0.0.5:8765/socket/../x/send", ".."),
            ("https://sd.example/socket/ab12/send", "ab12"),
            ("http://10.0.0.5:99999/socket/ab12/send", "ab12"),
            ("not a url", "ab12"),
        ]:
            self.assertFalse(trusted_send_url(url, cid, self.BASES), url)

    def test_parse(self):
        self.assertEqual(parse_trusted_urls(" http://a:1 ,, https://b/ "), ("http://a:1", "https://b/"))
        self.assertEqual(parse_trusted_urls(None), ())
        for bad in ["ftp://a", "http://a:x", "http://a b", "http://a/?q"]:
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                parse_trusted_urls(bad)


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

    def test_shape_fits_the_route(self):
        """Each kind's body is refused on the others' routes."""
        connect = {"meta": {"connection_id": "c", "send": "s", "disconnect": "d", "headers": {}}}
        message = {"meta": {"connection_id": "c", "send": "s", "seq": 1}, "message": "m"}
        disconnect = {"connection_id": "c",
                      "meta": {"connection_id": "c", "code": None, "reason": "", "initiator": "client"}}
        bodies = {"connect": connect, "message": message, "disconnect": disconnect}
        for kind, doc in bodies.items():
            for route in bodies:
                body = json.dumps(doc).encode()
                with self.subTest(kind=kind, route=route):
                    if kind == route:
                        Notice.parse(body, route)
                    else:
                        with self.assertRaises(BadRequest):
                            Notice.parse(body, route)


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
