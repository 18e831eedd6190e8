"""Tests for socketdock.config.endpoints: endpoint strings and addresses, read one way."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.endpoints import (
    base_url_for,
    endpoint_for,
    host_and_port,
    is_loopback,
    is_wildcard,
    learns_base_url,
    scheme_of,
    split_endpoint,
    tcp_address,
)


class EndpointStringTests(SynchronousTestCase):
    def test_split_keeps_escaped_colons(self) -> None:
        """Only unescaped colons separate fields; the escapes stay for Twisted."""
        self.assertEqual(
            split_endpoint(r"tcp:8765:interface=\:\:1"), ["tcp", "8765", r"interface=\:\:1"]
        )
        self.assertEqual(
            split_endpoint(r"tcp:8765:interface=\:\:1", maxsplit=1),
            ["tcp", r"8765:interface=\:\:1"],
        )

    def test_tcp_address(self) -> None:
        """Interface and port of the TCP kinds, also behind haproxy:; None for others."""
        self.assertEqual(tcp_address(r"tcp:8765:interface=\:\:1"), ("::1", 8765))
        self.assertEqual(tcp_address("haproxy:tcp:port=9:interface=127.0.0.1"), ("127.0.0.1", 9))
        self.assertEqual(tcp_address("tcp6:0"), ("::", 0))
        self.assertEqual(tcp_address("ssl:443"), ("", 443))
        self.assertIsNone(tcp_address("unix:/run/sd.sock"))

    def test_endpoint_for_round_trips(self) -> None:
        """endpoint_for escapes IPv6 colons so that tcp_address reads the same interface back."""
        for bindip in ("127.0.0.1", "::1", ""):
            self.assertEqual(tcp_address(endpoint_for(bindip, 8765)), (bindip, 8765))

    def test_learns_base_url(self) -> None:
        """Port 0 on one interface is learned; a fixed port, every interface or unix is not."""
        self.assertTrue(learns_base_url("tcp:0:interface=127.0.0.1"))
        self.assertTrue(learns_base_url("ssl:0:interface=127.0.0.1"))
        self.assertFalse(learns_base_url("tcp:8765:interface=127.0.0.1"))
        self.assertFalse(learns_base_url("tcp:0"))
        self.assertFalse(learns_base_url("unix:/run/sd.sock"))

    def test_scheme_of(self) -> None:
        self.assertEqual((scheme_of("ssl:443"), scheme_of("tcp:80")), ("https", "http"))


class AddressTests(SynchronousTestCase):
    def test_is_loopback(self) -> None:
        for interface in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
            self.assertTrue(is_loopback(interface), interface)
        for interface in ("", "0.0.0.0", "::", "10.0.0.1", "backend.internal"):
            self.assertFalse(is_loopback(interface), interface)

    def test_is_wildcard(self) -> None:
        for bindip in ("", "0.0.0.0", "::"):
            self.assertTrue(is_wildcard(bindip), bindip)
        for bindip in ("127.0.0.1", "::1", "localhost"):
            self.assertFalse(is_wildcard(bindip), bindip)

    def test_brackets_for_ipv6_only(self) -> None:
        self.assertEqual(host_and_port("::1", 80), "[::1]:80")
        self.assertEqual(host_and_port("127.0.0.1", 80), "127.0.0.1:80")
        self.assertEqual(base_url_for("::1", 443, "https"), "https://[::1]:443")
        self.assertEqual(base_url_for("localhost", 80), "http://localhost:80")
