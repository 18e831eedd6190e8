"""The ``cluster`` setting: its URL forms, its mistakes, and its secret."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.cluster import RedisAddress
from socketdock.config.settings import ConfigError, load_config


def _load(**cli: str):
    return load_config(cli, {}, None)


class ClusterSettingTests(SynchronousTestCase):
    """``cluster = redis://...`` parsed into a RedisAddress."""

    def test_forms(self) -> None:
        """Host, port, db, password and TLS come from the URL; port and db have defaults."""
        cases = {
            "redis://127.0.0.1:6380/2": RedisAddress("127.0.0.1", 6380, 2, False),
            "redis://redis.internal": RedisAddress("redis.internal", 6379, 0, False),
            "rediss://:s%40cret@[::1]:6390/0": RedisAddress("::1", 6390, 0, True, "s@cret"),
            "redis://user:pw@h/3": RedisAddress("h", 6379, 3, False, "pw", "user"),
        }
        for url, expected in cases.items():
            self.assertEqual(_load(cluster=url).cluster, expected, url)

    def test_password_from_environment(self) -> None:
        """SOCKETDOCK_CLUSTER gives the whole URL, password included, like any setting."""
        config = load_config({}, {"SOCKETDOCK_CLUSTER": "redis://:pw@127.0.0.1:1/0"}, None)
        assert config.cluster is not None
        self.assertEqual(config.cluster.password, "pw")

    def test_password_never_shown(self) -> None:
        """Neither the Config's repr nor the address's str or repr shows the password."""
        config = _load(cluster="redis://:hunter2-secret@127.0.0.1:6379/0")
        for text in (repr(config), str(config.cluster), repr(config.cluster)):
            self.assertNotIn("hunter2-secret", text)
        self.assertEqual(str(config.cluster), "redis://***@127.0.0.1:6379/0")

    def test_mistakes(self) -> None:
        """Wrong scheme, bad port or db, no host: one line naming cluster, no password quoted."""
        for url in (
            "http://:topsecret@h:1/0",
            "redis://:topsecret@h:99999/0",
            "redis://:topsecret@h:1/x",
            "redis://:topsecret@:1/0",
            "redis://:topsecret@h:1/0?ssl=1",
            "redis://:top secret@h/0",
        ):
            with self.assertRaises(ConfigError) as caught:
                _load(cluster=url)
            message = str(caught.exception)
            self.assertTrue(message.startswith("cluster: "), message)
            self.assertNotIn("topsecret", message)
            self.assertEqual(len(message.splitlines()), 1)

    def test_not_with_journal(self) -> None:
        """cluster and journal together are refused, naming journal and the fix."""
        with self.assertRaises(ConfigError) as caught:
            _load(cluster="redis://127.0.0.1/0", journal="/tmp/x.sqlite")
        self.assertEqual(caught.exception.key, "journal")

    def test_heartbeat(self) -> None:
        """cluster_heartbeat is a positive number of seconds, 5 by default."""
        self.assertEqual(_load().cluster_heartbeat, 5.0)
        self.assertEqual(_load(cluster_heartbeat="0.25").cluster_heartbeat, 0.25)
        with self.assertRaises(ConfigError):
            _load(cluster_heartbeat="0")


class ClientMissingTests(SynchronousTestCase):
    """cluster set where txredisapi is not installed: one line at start, no traceback."""

    def test_preflight_names_the_package(self) -> None:
        """The preflight check refuses cluster without its client, naming the fix."""
        import importlib.util

        from socketdock.config import preflight

        config = _load(cluster="redis://127.0.0.1/0")
        real = importlib.util.find_spec
        self.patch(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "txredisapi" else real(name, *a),
        )
        with self.assertRaises(ConfigError) as caught:
            preflight.check_startable(config, None)
        self.assertEqual(caught.exception.key, "cluster")
        self.assertIn(".[cluster]", str(caught.exception))
