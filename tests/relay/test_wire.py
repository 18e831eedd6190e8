"""Tests for socketdock.relay.wire: the bodies existing backends parse (SPEC §3)."""

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay import wire

URLS = wire.CallbackURLs("http://sd-a:8765")
ID = "0123456789abcdef0123456789abcdef"


class ConnectionIdTests(SynchronousTestCase):
    def test_ids_are_128_bit_lowercase_hex(self) -> None:
        """Ids are 32 lowercase hex digits and never repeat."""
        ids = {wire.new_connection_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        for i in ids:
            self.assertRegex(i, r"^[0-9a-f]{32}$")


class MessageBodyTests(SynchronousTestCase):
    def test_text_message_is_the_compat_shape(self) -> None:
        """A text message is {"meta": {id, send, disconnect, seq}, "message": str}."""
        body = json.loads(wire.message_body(URLS, ID, 1, "héllo".encode(), False))
        self.assertEqual(
            body,
            {
                "meta": {
                    "connection_id": ID,
                    "send": f"http://sd-a:8765/socket/{ID}/send",
                    "disconnect": f"http://sd-a:8765/socket/{ID}/disconnect",
                    "seq": 1,
                },
                "message": "héllo",
            },
        )

    def test_utf8_binary_travels_as_string(self) -> None:
        """A binary frame that is valid UTF-8 is sent as the string with binary: true."""
        body = json.loads(wire.message_body(URLS, ID, 7, b'{"a": 1}', True))
        self.assertEqual(body["message"], '{"a": 1}')
        self.assertIs(body["meta"]["binary"], True)
        self.assertNotIn("encoding", body["meta"])
        self.assertEqual(body["meta"]["seq"], 7)

    def test_other_binary_is_base64(self) -> None:
        """A binary frame that is not UTF-8 is base64 with encoding: base64, losslessly."""
        payload = bytes(range(256))
        body = json.loads(wire.message_body(URLS, ID, 2, payload, True))
        self.assertEqual(body["meta"]["encoding"], "base64")
        self.assertIs(body["meta"]["binary"], True)
        self.assertEqual(base64.b64decode(body["message"]), payload)

    def test_body_is_utf8_json_not_ascii_escaped(self) -> None:
        """Non-ASCII text is sent as UTF-8 bytes, not \\u escapes."""
        raw = wire.message_body(URLS, ID, 1, "ü".encode(), False)
        self.assertIn("ü".encode(), raw)


class ConnectAndDisconnectTests(SynchronousTestCase):
    def test_connect_names_urls_and_headers(self) -> None:
        """The connect notice carries the callback URLs and the upgrade headers."""
        body = json.loads(wire.connect_body(URLS, ID, {"origin": "https://a", "x-y": "1, 2"}))
        self.assertEqual(body["meta"]["headers"], {"origin": "https://a", "x-y": "1, 2"})
        self.assertEqual(body["meta"]["send"], URLS.send(ID))
        self.assertEqual(body["meta"]["disconnect"], URLS.disconnect(ID))

    def test_disconnect_has_id_at_top_level_and_in_meta(self) -> None:
        """The notice keeps the original top-level connection_id and adds details in meta."""
        body = json.loads(wire.disconnect_body(ID, None, "", "client"))
        self.assertEqual(
            body,
            {
                "connection_id": ID,
                "meta": {"connection_id": ID, "code": None, "reason": "", "initiator": "client"},
            },
        )

    def test_recovered_flag_only_when_recovered(self) -> None:
        """Only a notice sent after a crash carries recovered: true."""
        self.assertNotIn(b"recovered", wire.disconnect_body(ID, 1000, "", "server"))
        body = json.loads(wire.disconnect_body(ID, None, "restart", "server", recovered=True))
        self.assertIs(body["meta"]["recovered"], True)


class TagTests(SynchronousTestCase):
    def test_untagged_bodies_are_unchanged_bytes(self) -> None:
        """Without tags the message and notice bodies are byte for byte the compat ones."""
        self.assertEqual(
            wire.message_body(URLS, ID, 3, b"hi", False),
            b'{"meta":{"connection_id":"%s","send":"http://sd-a:8765/socket/%s/send",'
            b'"disconnect":"http://sd-a:8765/socket/%s/disconnect","seq":3},"message":"hi"}'
            % ((ID.encode(),) * 3),
        )
        self.assertEqual(
            wire.disconnect_body(ID, 1000, "", "client", tags=()),
            b'{"connection_id":"%s","meta":{"connection_id":"%s","code":1000,'
            b'"reason":"","initiator":"client"}}' % ((ID.encode(),) * 2),
        )

    def test_tags_go_last_in_meta(self) -> None:
        """A tagged connection's message and notice carry meta.tags, in order, after the rest."""
        body = json.loads(wire.message_body(URLS, ID, 1, b"\xff", True, tags=("b", "a/é")))
        self.assertEqual(body["meta"]["tags"], ["b", "a/é"])
        self.assertEqual(list(body["meta"])[-1], "tags")
        self.assertEqual(body["meta"]["encoding"], "base64")
        notice = json.loads(wire.disconnect_body(ID, None, "", "server", True, ("t",)))
        self.assertEqual(notice["meta"]["tags"], ["t"])
        self.assertIs(notice["meta"]["recovered"], True)
