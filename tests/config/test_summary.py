"""Tests for socketdock.config.summary: the one start-up line, secrets redacted."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.settings import load_config
from socketdock.config.summary import summary, summary_line

SAMPLE = str(Path(__file__).resolve().parents[2] / "etc" / "socketdock.ini")


class SummaryTests(SynchronousTestCase):
    def test_sample_config(self) -> None:
        """The sample INI's line names the listener, loopback, no journal or cluster, limits and unset secrets."""
        line = summary_line(summary(load_config({}, {}, SAMPLE)))
        self.assertTrue(
            line.startswith(
                "listeners listen tcp:8765:interface=127.0.0.1 (WebSocket /ws, callback API at "
                "http://127.0.0.1:8765); backend loopback; journal off; cluster off; tuning auto; "
                "limits max_connections unlimited, max_message_size 4194304, "
            ),
            line,
        )
        self.assertIn("max_lifetime off, tag_deadline off", line)
        self.assertTrue(line.endswith("secrets api_token not set, signing_secret not set"), line)

    def test_secrets_redacted(self) -> None:
        """Tokens, signing secrets and the Redis password are counted, never shown; URLs are."""
        config = load_config(
            {
                "backend": "http",
                "messageuri": "http://b.internal/m",
                "connecturi": "http://b.internal/c",
                "api_token": "t0ken-a,t0ken-b",
                "signing_secret": "s3cret",
                "cluster": "redis://:hunter2@127.0.0.1:6379/0",
                "api_listen": "tcp:0:interface=127.0.0.1",
            },
            {},
            None,
        )
        fields = summary(config)
        line = summary_line(fields)
        for secret in ("t0ken", "s3cret", "hunter2"):
            self.assertNotIn(secret, line)
        self.assertEqual(
            fields["backend"], "http (message http://b.internal/m, connect http://b.internal/c)"
        )
        self.assertEqual(fields["cluster"], "redis://***@127.0.0.1:6379/0")
        self.assertEqual(
            fields["secrets"],
            "api_token set (2 tokens), signing_secret set (1 secret), cluster password set",
        )
        self.assertIn("api_listen tcp:0:interface=127.0.0.1 (callback API at the port bound)", line)

    def test_make_service_logs_it_once(self) -> None:
        """Building an instance logs exactly one "starting:" line at info, with the fields."""
        from socketdock.assembly import make_service

        config = load_config({"bindport": "0"}, {}, None)
        with capturedLogs() as events:
            make_service(config, MemoryReactorClock())
        starting = [e for e in events if e.get("log_format") == "starting: {summary}"]
        self.assertEqual(len(starting), 1)
        self.assertEqual(starting[0]["log_level"].name, "info")
        self.assertEqual(starting[0]["backend"], "loopback")
