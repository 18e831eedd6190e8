"""
The instance's counters, kept once and read two ways: ``/status`` (JSON) and
``/metrics`` (Prometheus text).

Each service instance owns its own ``CollectorRegistry``; nothing goes into
prometheus-client's process-global default registry, so tests (and two
instances in one process) never share figures.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

#: Seconds; a relay's backend round trips are usually a few milliseconds.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class Metrics:
    """
    Every figure SocketDock reports.

    :param active: how many connections are live right now.
    :param queued: how many messages wait for the backend right now.
    """

    def __init__(self, active: Callable[[], int], queued: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._active = Gauge(
            "socketdock_connections_active", "Live WebSocket connections.", registry=r
        )
        self._active.set_function(active)
        self._queued = Gauge(
            "socketdock_queue_depth", "Messages waiting for the backend.", registry=r
        )
        self._queued.set_function(queued)
        self._opened = Counter(
            "socketdock_connections_opened", "Handshakes completed.", registry=r
        )
        self._closed = Counter(
            "socketdock_connections_closed",
            "Connections closed, by close code (none: dropped without a close frame).",
            ["code"],
            registry=r,
        )
        self._refused = Counter(
            "socketdock_handshakes_refused", "Handshakes refused, by HTTP status.",
            ["status"], registry=r,
        )
        self._messages = Counter(
            "socketdock_messages", "WebSocket messages relayed, by direction.",
            ["direction"], registry=r,
        )
        self._in = self._messages.labels("in")
        self._out = self._messages.labels("out")
        self._requests = Counter(
            "socketdock_backend_requests",
            "Requests to the backend, by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self._retries = Counter(
            "socketdock_backend_retries", "Backend requests retried.", registry=r
        )
        self._failures = Counter(
            "socketdock_backend_failures",
            "Backend requests that failed for good (refused, or retries used up).",
            registry=r,
        )
        self._latency = Histogram(
            "socketdock_backend_latency_seconds",
            "Time for one backend request attempt.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Known label values get their series at once, so that dashboards and
        # rate() see a zero before the first request instead of no data.
        for kind in ("connect", "message", "disconnect"):
            self._latency.labels(kind)
        self._active_fn = active
        self._lifetime = 0
        # labels() hashes and locks on every call; a relay repeats the same few
        # (kind, outcome) pairs, so keep the children it hands out.
        self._request_series: dict[tuple[str, str], tuple] = {}

    def connection_opened(self) -> None:
        self._lifetime += 1
        self._opened.inc()

    def connection_closed(self, code: "int | None") -> None:
        self._closed.labels("none" if code is None else str(code)).inc()

    def handshake_refused(self, status: int) -> None:
        self._refused.labels(str(status)).inc()

    def message_in(self) -> None:
        self._in.inc()

    def message_out(self) -> None:
        self._out.inc()

    def backend_request(self, kind: str, outcome: str, seconds: float) -> None:
        """One attempt of a ``kind`` (connect/message/disconnect) request."""
        series = self._request_series.get((kind, outcome))
        if series is None:
            series = self._request_series[kind, outcome] = (
                self._requests.labels(kind, outcome), self._latency.labels(kind)
            )
        series[0].inc()
        series[1].observe(seconds)

    def backend_retry(self) -> None:
        self._retries.inc()

    def backend_failure(self) -> None:
        self._failures.inc()

    def status(self) -> dict:
        """The counters part of ``GET /status`` (read through the public API)."""
        value = self.registry.get_sample_value

        def count(name: str, **labels: str) -> int:
            return int(value(name, labels) or 0)

        return {
            "connections": {"active": self._active_fn(), "lifetime": self._lifetime},
            "messages": {
                "in": count("socketdock_messages_total", direction="in"),
                "out": count("socketdock_messages_total", direction="out"),
            },
            "backend": {
                "failures": count("socketdock_backend_failures_total"),
                "retries": count("socketdock_backend_retries_total"),
            },
        }

    def exposition(self) -> bytes:
        """The Prometheus text format of every figure."""
        return generate_latest(self.registry)
