"""
JSON lines for log shippers (socketdock.ops.jsonlog) and log rotation under
``twistd --logfile``, once each with a real twistd.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socketdock.ops.jsonlog import _twistd_log_options, event_as_json_line, log_from_level
from tests.daemon import get, listening_port, spawn_socketdock, started, wait_for_file
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.test_tap_options import private_log_beginner
from tests.wsclient import connect_client

JSON_LOGGER = ("--logger", "socketdock.ops.jsonlog.json_observer")


class JsonLineTests(SynchronousTestCase):
    def test_fields(self):
        """An event becomes one JSON line with time, level, namespace, text and its fields."""
        line = event_as_json_line(
            {
                "log_time": 0.25,
                "log_level": LogLevel.warn,
                "log_namespace": "socketdock.relay.session",
                "log_format": "retry {attempt} for {connection_id}",
                "attempt": 2,
                "connection_id": "ab" * 16,
                "log_logger": object(),
            }
        )
        assert line is not None
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertEqual(
            json.loads(line),
            {
                "time": "1970-01-01T00:00:00.250Z",
                "level": "warn",
                "namespace": "socketdock.relay.session",
                "text": f"retry 2 for {'ab' * 16}",
                "attempt": 2,
                "connection_id": "ab" * 16,
            },
        )

    def test_failure_and_odd_values(self):
        """A failure is kept as a traceback; values JSON cannot hold become their repr."""
        try:
            1 / 0  # noqa: B018 (raises on purpose, for a real traceback)
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(
            event_as_json_line(
                {  # type: ignore[arg-type]  # a failure event is never dropped
                    "log_time": 0,
                    "log_level": LogLevel.error,
                    "log_namespace": "x",
                    "log_format": "boom",
                    "log_failure": failure,
                    "peer": ("127.0.0.1", 1),
                }
            )
        )
        self.assertIn("ZeroDivisionError", record["failure"])
        self.assertEqual(record["peer"], "('127.0.0.1', 1)")

    def test_twistd_options(self):
        """--logfile and -n are read as twistd reads them; the plugin's own options are not."""
        self.assertEqual(
            _twistd_log_options(["-n", "--logfile", "a.log", "socketdock", "--logfile", "b"]),
            (True, "a.log"),
        )
        self.assertEqual(_twistd_log_options(["-nl", "a.log", "socketdock"]), (True, "a.log"))
        self.assertEqual(_twistd_log_options(["--logfile=-", "socketdock"]), (False, "-"))
        self.assertEqual(_twistd_log_options(["socketdock", "-n"]), (False, None))


class LogLevelTests(SynchronousTestCase):
    """log_from_level filters what a LogBeginner starts logging to, as twistd's does."""

    def setUp(self) -> None:
        self.publisher = LogPublisher()
        self.beginner = private_log_beginner(self.publisher)
        self.log = Logger(namespace="test", observer=self.publisher)
        self.seen: list[str] = []

    def _begin(self) -> None:
        # A plain callable is a log observer (Twisted's types want the interface).
        observers: list[Any] = [lambda event: self.seen.append(event["log_level"].name)]
        self.beginner.beginLoggingTo(observers, redirectStandardIO=False)

    def _emit_one_of_each(self) -> None:
        self.log.debug("d")
        self.log.info("i")
        self.log.warn("w")
        self.log.error("e")

    def test_events_below_the_level_are_dropped(self) -> None:
        log_from_level("warn", self.beginner)
        self._begin()
        self._emit_one_of_each()
        self.assertEqual(self.seen, ["warn", "error"])

    def test_events_buffered_before_logging_began_are_filtered_too(self) -> None:
        log_from_level("info", self.beginner)
        self._emit_one_of_each()
        self._begin()
        self.assertEqual(self.seen, ["info", "warn", "error"])

    def test_debug_keeps_every_level(self) -> None:
        """log_level debug: every event is written, chatter included (at debug)."""
        log_from_level("debug", self.beginner)
        self._begin()
        self._emit_one_of_each()
        self.log.info("Starting factory {factory!r}", factory=object())
        self.assertEqual(self.seen, ["debug", "info", "warn", "error", "debug"])

    def test_library_chatter_is_below_info(self) -> None:
        """Factory start/stop and ClientService retry lines are debug; other info lines stay."""
        log_from_level("info", self.beginner)
        self._begin()
        pool = Logger(namespace="twisted.web.client._HTTP11ClientFactory", observer=self.publisher)
        pool.info("Starting factory {factory!r}", factory=object())
        pool.info("Stopping factory {factory!r}", factory=object())
        retries = Logger(
            namespace="twisted.application.internet.ClientService", observer=self.publisher
        )
        retries.info(
            "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
            attempt=1,
            endpoint="redis",
            delay=0.2,
        )
        retries.warn("Duplicate ClientService.startService {log_source}")
        self.log.info("i")
        self.assertEqual(self.seen, ["warn", "info"])

    def test_our_sites_are_not_noisy(self) -> None:
        """The API's site logs no "Starting factory" line of its own."""
        from twisted.web.resource import Resource

        from socketdock.api.site import make_site

        site = make_site(Resource(), None)
        self.assertFalse(site.noisy)


class TwistdLogTests(TestCase):
    """Real twistd processes writing their logs."""

    timeout = 60

    @inlineCallbacks
    def test_json_to_stdout(self):
        """With --logger json_observer and -n, every line on stdout is a JSON object."""
        instance = spawn_socketdock(
            self,
            reactor,
            "--bindport",
            "0",
            "--ping-interval",
            "0",
            twistd_args=("-n", "--pidfile=", *JSON_LOGGER),
        )
        yield Deferred.fromCoroutine(started(reactor, instance))
        instance.signal("TERM")
        code, _ = yield instance.exited
        self.assertEqual(code, 0, instance.text())
        records = [json.loads(line) for line in instance.text().splitlines() if line.strip()]
        draining = [r for r in records if r["text"].startswith("draining")]
        self.assertEqual(len(draining), 1)
        self.assertEqual(draining[0]["namespace"], "socketdock.service.SocketDockService")
        self.assertEqual((draining[0]["level"], draining[0]["count"]), ("info", 0))

    @inlineCallbacks
    def test_debug_events_are_left_out_by_default(self):
        """log_level defaults to info: the journal's per-batch debug lines stay out of the log."""
        backend = FakeBackend(reactor)
        backend_port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, backend_port, backend)
        journal = Path(self.mktemp()).resolve()
        journal.mkdir(parents=True)
        instance = spawn_socketdock(
            self,
            reactor,
            "--bindport",
            "0",
            "--ping-interval",
            "0",
            "--backend",
            "http",
            "--messageuri",
            url + "/message",
            "--connecturi",
            url + "/connect",
            "--journal",
            str(journal / "j.sqlite"),
            twistd_args=("-n", "--pidfile=", *JSON_LOGGER),
        )
        port = yield Deferred.fromCoroutine(started(reactor, instance))
        client = yield connect_client(reactor, f"ws://127.0.0.1:{port}/ws")
        self.addCleanup(client.shutdown)
        (notice,) = yield backend.wait_for("connect", 1)
        # The journal wrote the connection (its id is in the write-ahead log):
        # at debug level that write would have logged a line.
        yield wait_for_file(
            self, reactor, journal / "j.sqlite-wal", notice["meta"]["connection_id"]
        )
        instance.signal("TERM")
        code, _ = yield instance.exited
        self.assertEqual(code, 0, instance.text())
        records = [json.loads(line) for line in instance.text().splitlines() if line.strip()]
        self.assertIn("info", {r["level"] for r in records})
        self.assertEqual([r["text"] for r in records if r["level"] == "debug"], [])

    def test_json_logfile_rotates_on_sigusr1(self):
        """JSON lines go to --logfile; SIGUSR1 renames it to .1 and later lines go to a fresh file of the same mode."""
        return self._rotation(JSON_LOGGER, json_lines=True)

    def test_text_logfile_rotates_on_sigusr1(self):
        """twistd's own text --logfile: SIGUSR1 renames it to .1 and later lines go to a fresh file of the same mode."""
        return self._rotation((), json_lines=False)

    @inlineCallbacks
    def _rotation(self, logger, json_lines):
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        log = directory / "socketdock.log"
        # twistd makes the first file with the umask it was started with
        # (022: 0644), then sets --umask 077: without care, the files a
        # rotation makes are 0600.
        old_umask = os.umask(0o022)
        try:
            instance = spawn_socketdock(
                self,
                reactor,
                "--bindport",
                "0",
                "--ping-interval",
                "0",
                twistd_args=("-n", "--pidfile=", "--umask", "077", "--logfile", str(log), *logger),
            )
        finally:
            os.umask(old_umask)
        content = yield wait_for_file(self, reactor, log, "listen: listening on")
        port = listening_port(content.decode("utf-8"))
        yield get(reactor, f"http://127.0.0.1:{port}/healthz")  # the reactor runs
        self.assertEqual(instance.text(), "")  # nothing on stdout: all in the file
        instance.signal("USR1")
        rotated = yield wait_for_file(self, reactor, directory / "socketdock.log.1", "starting on")
        client = yield connect_client(reactor, f"ws://127.0.0.1:{port}/ws")
        self.addCleanup(client.shutdown)
        yield client.shutdown()
        fresh = yield wait_for_file(self, reactor, log, " closed after ")
        first = directory / "socketdock.log.1"
        self.assertEqual(oct(first.stat().st_mode & 0o777), oct(0o644))
        self.assertEqual(oct(log.stat().st_mode & 0o777), oct(0o644), "the first file's mode")
        self.assertNotIn(b" closed after ", rotated)
        self.assertNotIn(b"starting on", fresh)
        if json_lines:
            for line in (rotated + fresh).splitlines():
                self.assertIsInstance(json.loads(line), dict)
        instance.signal("TERM")
        code, _ = yield instance.exited
        self.assertEqual(code, 0)
