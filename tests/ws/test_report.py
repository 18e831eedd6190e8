"""
Tests for socketdock.ws.report: a refused handshake is counted and logged in
one line, with or without the client's id; an opened connection's end is one
line with its code, initiator and lifetime.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.report import connection_closed, handshake_refused


class RecordingMetrics:
    def __init__(self) -> None:
        self.refused: list[tuple[int, str]] = []

    def handshake_refused(self, status: int, reason: str) -> None:
        self.refused.append((status, reason))


class ReportTests(SynchronousTestCase):
    log = Logger()

    def test_refusal_before_an_id(self) -> None:
        """Without an id the line names the peer; the refusal is counted with its status and label."""
        metrics: Any = RecordingMetrics()
        with capturedLogs() as events:
            handshake_refused(self.log, metrics, "1.2.3.4:5", 403, "origin", "origin not allowed")
        (event,) = events
        self.assertEqual(metrics.refused, [(403, "origin")])
        self.assertEqual(
            formatEvent(event), "handshake from 1.2.3.4:5 refused: 403 origin not allowed"
        )
        # The caller's logger: its namespace and source, as if it logged itself.
        self.assertEqual(
            (event["log_namespace"], event["log_source"], event["log_level"].name),
            (f"{__name__}.ReportTests", self, "info"),
        )
        self.assertNotIn("connection_id", event)

    def test_refusal_after_an_id(self) -> None:
        """Once the relay gave the client an id, the line carries it as a field."""
        metrics: Any = RecordingMetrics()
        with capturedLogs() as events:
            handshake_refused(self.log, metrics, "p", 503, "backend", "no", connection_id="ab12")
        (event,) = events
        self.assertEqual(event["connection_id"], "ab12")
        self.assertEqual(formatEvent(event), "handshake of ab12 from p refused: 503 no")

    def test_closed_line(self) -> None:
        """One line with the id, peer, code, initiator and seconds to one decimal."""
        with capturedLogs() as events:
            connection_closed(self.log, "ab12", "p", 1001, "server", 12.345)
        (event,) = events
        self.assertEqual(
            (event["code"], event["initiator"], event["seconds"]), (1001, "server", 12.345)
        )
        self.assertEqual(
            formatEvent(event), "client ab12 from p closed after 12.3s: code 1001, initiator server"
        )
