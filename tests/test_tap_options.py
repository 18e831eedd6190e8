"""Tests for :class:`socketdock.tap.Options`: the twistd command line."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.logger import LogBeginner, LogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.settings import SETTINGS, Config, load_config
from socketdock.tap import Options, makeService


def private_log_beginner(publisher: LogPublisher | None = None) -> LogBeginner:
    """A LogBeginner of the test's own, so makeService leaves the process's log alone."""
    stdio = SimpleNamespace(stdout=io.StringIO(), stderr=io.StringIO())
    return LogBeginner(publisher or LogPublisher(), io.StringIO(), stdio, warnings)


def _parse(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """
    :param argv: the plugin's arguments.
    :param environ: the environment; empty by default so the real one never leaks in.
    """
    options = Options(environ={} if environ is None else environ, preflight=lambda config: None)
    options.parseOptions(argv)
    config = options["settings"]
    assert isinstance(config, Config)
    return config


class OptionsTests(SynchronousTestCase):
    """Command-line options feed load_config."""

    def test_no_options(self) -> None:
        """Without options the settings are the defaults."""
        self.assertEqual(_parse([]), load_config({}, {}, None))

    def test_one_option_per_setting(self) -> None:
        """Every SETTINGS key has a --dashed option whose help is the key's help."""
        usage_text = Options(environ={}).getUsage(width=1000)
        for s in SETTINGS:
            self.assertIn("--" + s.key.replace("_", "-") + "=", usage_text)
            self.assertIn(s.help, usage_text)

    def test_last_repeat_wins(self) -> None:
        """A repeated option's last value wins."""
        self.assertEqual(_parse(["--bindport", "9000", "--bindport", "9001"]).bindport, 9001)

    def test_dashed_option(self) -> None:
        """--max-message-size sets max_message_size."""
        self.assertEqual(_parse(["--max-message-size", "65536"]).max_message_size, 65536)

    def test_equals_form(self) -> None:
        """--key=value works as well as --key value."""
        c = _parse(["--backend=http", "--messageuri=https://b.example/m"])
        self.assertEqual((c.backend, c.messageuri), ("http", "https://b.example/m"))

    def test_bad_value(self) -> None:
        """A bad value raises UsageError with one line naming the key and the fix."""
        e = self.assertRaises(usage.UsageError, _parse, ["--bindport", "abc"])
        self.assertEqual(
            str(e), "bindport: 'abc' is not a port number; use an integer from 0 to 65535"
        )

    def test_cross_key_error(self) -> None:
        """A rule across keys is reported as a UsageError too."""
        e = self.assertRaises(usage.UsageError, _parse, ["--backend", "http"])
        self.assertTrue(str(e).startswith("messageuri: "), str(e))
        self.assertEqual(len(str(e).splitlines()), 1)

    def test_unknown_option(self) -> None:
        """An option that is not a setting is refused with one line naming the closest one."""
        e = self.assertRaises(usage.UsageError, _parse, ["--bind-port", "1"])
        self.assertEqual(str(e), "--bind-port: unknown option; did you mean --bindport?")

    def test_option_without_value(self) -> None:
        """An option at the end with no value says how to give one."""
        e = self.assertRaises(usage.UsageError, _parse, ["--bindport"])
        self.assertEqual(str(e), "--bindport: no value given; write --bindport VALUE")

    def test_stray_argument(self) -> None:
        """A word that is not an option is named, with the --key value form."""
        e = self.assertRaises(usage.UsageError, _parse, ["bindport=1"])
        self.assertTrue(str(e).startswith("'bindport=1': not an option; "), str(e))


class UnderTwistdTests(SynchronousTestCase):
    """
    Under twistd (the parent that sets ``parent``) a mistake is one line on stderr
    and exit 1, because twistd would print its whole usage text before the line.
    """

    def parse(self, argv: list[str], environ: dict[str, str] | None = None):
        from twisted.scripts.twistd import ServerOptions

        stderr = io.StringIO()
        options = Options(environ=environ or {}, preflight=lambda config: None, stderr=stderr)
        options.parent = ServerOptions()
        return options, stderr, argv

    def test_mistake_is_one_line_and_exit_1(self) -> None:
        """A bad value: SystemExit(1) and exactly 'twistd socketdock: <key>: <problem>; <fix>'."""
        options, stderr, argv = self.parse(["--bindport", "abc"])
        e = self.assertRaises(SystemExit, options.parseOptions, argv)
        self.assertEqual(e.code, 1)
        self.assertEqual(
            stderr.getvalue(),
            "twistd socketdock: bindport: 'abc' is not a port number; "
            "use an integer from 0 to 65535\n",
        )

    def test_unknown_environment_variable_warns(self) -> None:
        """A misspelt ``SOCKETDOCK_`` variable is one warning line; the settings still load."""
        options, stderr, argv = self.parse(
            ["--bindport", "9000"], {"SOCKETDOCK_WSPAHT": "/x", "SOCKETDOCK_WSPATH": "/y"}
        )
        options.parseOptions(argv)
        self.assertEqual(options["settings"].wspath, "/y")
        self.assertEqual(
            stderr.getvalue(),
            "twistd socketdock: warning: SOCKETDOCK_WSPAHT: not a setting, ignored; "
            "did you mean SOCKETDOCK_WSPATH (wspath)?\n",
        )

    def test_environ_injected(self) -> None:
        """The constructor's environ is read, and the command line beats it."""
        env = {"SOCKETDOCK_BINDPORT": "7000", "SOCKETDOCK_WSPATH": "/env"}
        c = _parse(["--bindport", "7001"], env)
        self.assertEqual((c.bindport, c.wspath), (7001, "/env"))

    def test_config_file(self) -> None:
        """--config reads the INI file, below the environment and the command line."""
        path = Path(self.mktemp())
        path.write_text("[socketdock]\nbindport = 6000\nwspath = /ini\nqueue_limit = 3\n")
        c = _parse(["--config", str(path), "--wspath", "/cli"], {"SOCKETDOCK_BINDPORT": "6001"})
        self.assertEqual((c.bindport, c.wspath, c.queue_limit), (6001, "/cli", 3))

    def test_missing_config_file(self) -> None:
        """A missing --config file is a UsageError naming it."""
        e = self.assertRaises(usage.UsageError, _parse, ["-c", "/nonexistent/sd.ini"])
        self.assertIn("'/nonexistent/sd.ini'", str(e))
        self.assertTrue(str(e).startswith("config: "), str(e))

    def test_make_service_listens_on_the_configured_endpoints(self) -> None:
        """makeService builds one listener per endpoint string, on the given reactor."""
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        settings = _parse(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--api-listen",
                "tcp:0:interface=127.0.0.2",
                "--externalhostandport",
                "h:1",
            ]
        )
        options: Any = {"settings": settings}  # makeService reads only options["settings"]
        service = makeService(options, reactor=reactor, log_beginner=private_log_beginner())
        service.startService()
        self.addCleanup(service.stopService)  # it also undoes the tuned stack's patches
        self.assertEqual(sorted(port[3] for port in reactor.tcpServers), ["127.0.0.1", "127.0.0.2"])
