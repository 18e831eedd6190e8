"""
Tests for :mod:`socketdock.config.preflight`: what is checked against the
operating system before twistd starts anything, and which key a failure names.
"""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.preflight import check_startable
from socketdock.config.settings import ConfigError, load_config


class PortClashTests(SynchronousTestCase):
    """A port in use is named by the setting the operator used to choose it."""

    def setUp(self) -> None:
        self.taken = socket.socket()
        self.addCleanup(self.taken.close)
        self.taken.bind(("127.0.0.1", 0))
        self.taken.listen(1)
        self.port = self.taken.getsockname()[1]

    def clash(self, cli: dict[str, str]) -> ConfigError:
        config = load_config(cli, {}, None)
        return self.assertRaises(ConfigError, check_startable, config, MemoryReactorClock())

    def test_bindport_names_bindport(self) -> None:
        """A clash on bindport names bindport, not the listen derived from it."""
        e = self.clash({"bindip": "127.0.0.1", "bindport": str(self.port)})
        self.assertEqual(e.key, "bindport")
        self.assertTrue(
            str(e).startswith(f"bindport: cannot listen on 127.0.0.1:{self.port} "), str(e)
        )

    def test_listen_names_listen(self) -> None:
        """A clash on an explicit listen string names listen."""
        e = self.clash(
            {
                "listen": f"tcp:{self.port}:interface=127.0.0.1",
                "externalhostandport": "http://127.0.0.1:1",
            }
        )
        self.assertEqual(e.key, "listen")

    def test_api_listen_names_api_listen(self) -> None:
        """A clash on api_listen names api_listen."""
        e = self.clash(
            {
                "bindport": "0",
                "api_listen": f"tcp:{self.port}:interface=127.0.0.1",
                "externalhostandport": "http://127.0.0.1:1",
            }
        )
        self.assertEqual(e.key, "api_listen")


class EndpointTypeTests(SynchronousTestCase):
    """Which endpoint types exist is asked of Twisted: its parsers and plugins."""

    def check(self, cli: dict[str, str]) -> None:
        config = load_config({"externalhostandport": "http://127.0.0.1:1", **cli}, {}, None)
        check_startable(config, MemoryReactorClock())

    def test_haproxy_accepted(self) -> None:
        """haproxy:tcp:... (a plugin of Twisted's, the PROXY protocol) is accepted."""
        self.check({"listen": "haproxy:tcp:0:interface=127.0.0.1"})
        self.check({"api_listen": "haproxy:tcp:0:interface=127.0.0.1", "bindport": "0"})

    def test_unknown_type_refused_by_twisted(self) -> None:
        """A type Twisted does not know is refused, naming the key and Twisted's reason."""
        e = self.assertRaises(ConfigError, self.check, {"listen": "udp:53"})
        self.assertEqual(e.key, "listen")
        self.assertIn("Unknown endpoint type: 'udp'", str(e))
        e = self.assertRaises(ConfigError, self.check, {"api_listen": "carrier:1", "bindport": "0"})
        self.assertEqual(e.key, "api_listen")

    def test_haproxy_port_clash(self) -> None:
        """The port behind haproxy: is checked like any TCP port."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        e = self.assertRaises(
            ConfigError, self.check, {"listen": f"haproxy:tcp:{port}:interface=127.0.0.1"}
        )
        self.assertEqual(e.key, "listen")
        self.assertIn("cannot listen on 127.0.0.1:", str(e))
