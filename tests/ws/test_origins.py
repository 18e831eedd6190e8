"""Tests for socketdock.ws.origins: the allowed_origins pattern semantics."""

from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.origins import OriginPolicy


class OriginPolicyTests(SynchronousTestCase):
    def test_star_allows_everything(self):
        """``*`` alone admits any origin, the opaque ``null`` one included."""
        policy = OriginPolicy(["*"])
        for origin in ("https://a.test", "null", "http://x:1"):
            self.assertTrue(policy.allows(origin), origin)

    def test_pattern_without_port_means_default_port(self):
        """``https://*.example.com`` admits subdomains on 443 only, over https only."""
        policy = OriginPolicy(["https://*.example.com"])
        for origin in (
            "https://app.example.com",
            "https://APP.Example.com:443",
            "https://a.b.example.com/",
        ):
            self.assertTrue(policy.allows(origin), origin)
        for origin in (
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.com",
            "https://example.com.evil.test",
            "https://evil.test/.example.com",
            "null",
            "app.example.com",
        ):
            self.assertFalse(policy.allows(origin), origin)

    def test_ports_schemes_and_ipv6(self):
        """An explicit or * port, a scheme-less pattern and an IPv6 literal match as written."""
        policy = OriginPolicy(
            ["http://localhost:*", "https://app.test:8443", "*.internal", "http://[::1]:3000"]
        )
        for origin in (
            "http://localhost:3000",
            "http://localhost",
            "https://app.test:8443",
            "http://a.internal",
            "https://b.internal",
            "http://[::1]:3000",
        ):
            self.assertTrue(policy.allows(origin), origin)
        for origin in (
            "https://localhost:3000",
            "https://app.test",
            "http://a.internal:81",
            "http://[::1]:3001",
        ):
            self.assertFalse(policy.allows(origin), origin)
