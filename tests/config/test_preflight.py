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
        self.assertTrue(str(e).startswith(f"bindport: cannot listen on 127.0.0.1:{self.port} "), str(e))

    def test_listen_names_listen(self) -> None:
        """A clash on an explicit listen string names listen."""
        e = self.clash({"listen": f"tcp:{self.port}:interface=127.0.0.1",
                        "externalhostandport": "http://127.0.0.1:1"})
        self.assertEqual(e.key, "listen")

    def test_api_listen_names_api_listen(self) -> None:
        """A clash on api_listen names api_listen."""
        e = self.clash({"bindport": "0", "api_listen": f"tcp:{self.port}:interface=127.0.0.1",
                        "externalhostandport": "http://127.0.0.1:1"})
        self.assertEqual(e.key, "api_listen")
