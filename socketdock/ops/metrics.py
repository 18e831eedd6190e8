"""
The instance's counters, kept once and read two ways: ``/status`` (JSON) and
``/metrics`` (Prometheus text).

Each service instance owns its own ``CollectorRegistry``; nothing goes into
prometheus-client's process-global default registry, so tests (and two
instances in one process) never share figures.

The figures touched on every message (messages in and out, backend requests
and their latency) are plain numbers read by a collector at scrape time:
prometheus-client's metric objects take a lock on every update, which cost
~2% of a relayed round trip in a process that has only one thread updating.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

#: Seconds; a relay's backend round trips are usually a few milliseconds.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: The ``le`` label of each bucket, as prometheus-client writes it.
_BUCKET_LABELS = (*(repr(float(b)) for b in _LATENCY_BUCKETS), "+Inf")


def close_code_label(code: int | None) -> str:
    """
    A close code as a label value from a bounded set: the registered codes
    (1000-2999) as themselves, an application's (3000-4999) by thousand, so
    that clients choosing codes cannot add label values without end.
    """
    if code is None:
        return "none"
    if 1000 <= code <= 2999:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


class Metrics:
    """
    Every figure SocketDock reports.

    The gauges read their figures at a scrape, from the objects that hold
    them; the relay is built on these counters, so those sources are given
    by :meth:`read_from` once they exist (or here, where they already do).

    :param active: how many connections are live right now.
    :param queued: how many messages wait for the backend right now.
    :param tags: how many distinct tags live connections carry right now
        (one number: tag names never become labels, which would grow without
        bound).
    :param queued_bytes: the bytes counted against ``max_queued_bytes`` right now.
    :param cluster: in cluster mode, the ``cluster`` object of ``/status``
        right now (its ``link`` is ``"up"`` or ``"down"``); None otherwise.
    :param tuning: each faster path's name to ``"on"`` or why it is off
        (``/status``'s ``tuning`` object and ``socketdock_tuned``).
    """

    def __init__(
        self,
        active: Callable[[], int] = lambda: 0,
        queued: Callable[[], int] = lambda: 0,
        tags: Callable[[], int] = lambda: 0,
        cluster: Callable[[], dict] | None = None,
        tuning: Mapping[str, str] | None = None,
        queued_bytes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._cluster: Callable[[], dict] | None = None
        self._tuning = dict(tuning or {})
        if tuning:
            tuned = Gauge(
                "socketdock_tuned",
                "1 where a faster path beneath Twisted, treq or Autobahn runs, 0 where it is off.",
                ["piece"],
                registry=r,
            )
            for piece, why in self._tuning.items():
                tuned.labels(piece=piece).set(1 if why == "on" else 0)
        self._active = Gauge(
            "socketdock_connections_active", "Live WebSocket connections.", registry=r
        )
        self._queued = Gauge(
            "socketdock_queue_depth", "Messages waiting for the backend.", registry=r
        )
        self._queued_bytes = Gauge(
            "socketdock_queued_bytes",
            "Bytes of messages waiting for the backend or unread by slow clients"
            " (bounded by max_queued_bytes).",
            registry=r,
        )
        self._tags = Gauge(
            "socketdock_tags", "Distinct tags carried by live connections.", registry=r
        )
        self._opened = Counter("socketdock_connections_opened", "Handshakes completed.", registry=r)
        self._closed = Counter(
            "socketdock_connections_closed",
            "Connections closed, by close code (none: dropped without a close frame;"
            " 3xxx, 4xxx: an application's code).",
            ["code"],
            registry=r,
        )
        self._refused = Counter(
            "socketdock_handshakes_refused",
            "Handshakes refused, by HTTP status and reason.",
            ["status", "reason"],
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
        self._listener_refused = Counter(
            "socketdock_listener_refused",
            "Connections the WebSocket listener answered 503 and closed as it accepted"
            " them, holding as many as the open-file limit leaves room for.",
            registry=r,
        )
        self._api_refused = Counter(
            "socketdock_api_refused",
            "Callback-API requests refused for their bearer token, by reason"
            " (missing_token, wrong_token).",
            ["reason"],
            registry=r,
        )
        for reason in ("missing_token", "wrong_token"):
            self._api_refused.labels(reason)
        self._backend_auth = Counter(
            "socketdock_backend_auth_refused",
            "Backend requests answered 401 or 403 (an authentication failure:"
            " signing_secret or the backend's verifier), by kind.",
            ["kind"],
            registry=r,
        )
        for kind in _HotFigures.KINDS:
            self._backend_auth.labels(kind)
        self._hot = _HotFigures()
        r.register(self._hot)
        self.read_from(
            active=active, queued=queued, queued_bytes=queued_bytes, tags=tags, cluster=cluster
        )

    def read_from(
        self,
        *,
        active: Callable[[], int] | None = None,
        queued: Callable[[], int] | None = None,
        queued_bytes: Callable[[], int] | None = None,
        tags: Callable[[], int] | None = None,
        cluster: Callable[[], dict] | None = None,
    ) -> None:
        """
        Where the gauges given here read their figures from now on; a
        ``cluster`` (given once) adds the cluster's figures.
        """
        if active is not None:
            self._active_fn = active
            self._active.set_function(active)
        if queued is not None:
            self._queued.set_function(queued)
        if queued_bytes is not None:
            self._queued_bytes.set_function(queued_bytes)
        if tags is not None:
            self._tags.set_function(tags)
        if cluster is not None:
            assert self._cluster is None, "the cluster's figures are read from one place"
            self._cluster = cluster
            up = Gauge(
                "socketdock_cluster_up",
                "1 while the link to the cluster's Redis is up.",
                registry=self.registry,
            )
            up.set_function(lambda: 1 if cluster()["link"] == "up" else 0)
            self.registry.register(_ClusterDropped(cluster))

    def connection_opened(self) -> None:
        self._opened.inc()

    def connection_closed(self, code: int | None) -> None:
        self._closed.labels(close_code_label(code)).inc()

    def handshake_refused(self, status: int, reason: str) -> None:
        """
        :param reason: one of a fixed few words (``origin``, ``backend``, ...);
            never text from the request, so the label set stays bounded.
        """
        self._refused.labels(str(status), reason).inc()

    def listener_refused(self) -> None:
        self._listener_refused.inc()

    def api_refused(self, reason: str) -> None:
        """:param reason: ``missing_token`` or ``wrong_token``."""
        self._api_refused.labels(reason).inc()

    def backend_auth_refused(self, kind: str) -> None:
        """:param kind: connect, message or disconnect."""
        self._backend_auth.labels(kind).inc()

    def message_in(self) -> None:
        self._hot.messages_in += 1

    def message_out(self) -> None:
        self._hot.messages_out += 1

    def backend_request(self, kind: str, outcome: str, seconds: float) -> None:
        """One attempt of a ``kind`` (connect/message/disconnect) request."""
        self._hot.request(kind, outcome, seconds)

    def backend_retry(self) -> None:
        self._retries.inc()

    def backend_failure(self) -> None:
        self._failures.inc()

    def status(self) -> dict:
        """The counters part of ``GET /status`` (read through the public API)."""
        value = self.registry.get_sample_value

        def count(name: str, **labels: str) -> int:
            return int(value(name, labels) or 0)

        status: dict[str, Any] = {
            "connections": {
                "active": self._active_fn(),
                "lifetime": count("socketdock_connections_opened_total"),
            },
            "messages": {
                "in": self._hot.messages_in,
                "out": self._hot.messages_out,
            },
            "backend": {
                "failures": count("socketdock_backend_failures_total"),
                "retries": count("socketdock_backend_retries_total"),
            },
        }
        if self._tuning:
            status["tuning"] = dict(self._tuning)
        if self._cluster is not None:
            status["cluster"] = self._cluster()
        return status

    def exposition(self) -> bytes:
        """The Prometheus text format of every figure."""
        return generate_latest(self.registry)


class _ClusterDropped:
    """``socketdock_cluster_messages_dropped_total``, read from the cluster's status."""

    _NAME = "socketdock_cluster_messages_dropped"
    _HELP = "Messages on the cluster's tag channels that were not tag requests, dropped."

    def __init__(self, cluster: Callable[[], dict]) -> None:
        self._cluster = cluster

    def describe(self) -> list[Metric]:
        # Without this, registering would collect, and ask the cluster for
        # its status before it has a name.
        return [CounterMetricFamily(self._NAME, self._HELP)]

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            self._NAME, self._HELP, value=self._cluster().get("messages_dropped", 0)
        )


class _HotFigures:
    """
    The per-message figures as plain numbers, and the Prometheus collector
    that reports them (one event-loop thread updates them).
    """

    #: Request kinds whose latency series exist from the start, so that
    #: dashboards and rate() see a zero before the first request.
    KINDS = ("connect", "message", "disconnect")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self._requests: dict[tuple[str, str], int] = {}
        # kind -> [per-bucket counts (the last is +Inf), sum of seconds]
        self._latency: dict[str, list] = {kind: self._empty() for kind in self.KINDS}

    @staticmethod
    def _empty() -> list:
        return [[0] * (len(_LATENCY_BUCKETS) + 1), 0.0]

    def request(self, kind: str, outcome: str, seconds: float) -> None:
        key = (kind, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        latency = self._latency.get(kind)
        if latency is None:
            latency = self._latency[kind] = self._empty()
        latency[0][bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        latency[1] += seconds

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "socketdock_messages",
            "WebSocket messages relayed, by direction.",
            labels=["direction"],
        )
        messages.add_metric(["in"], self.messages_in)
        messages.add_metric(["out"], self.messages_out)
        yield messages
        requests = CounterMetricFamily(
            "socketdock_backend_requests",
            "Requests to the backend, by kind and outcome.",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in sorted(self._requests.items()):
            requests.add_metric([kind, outcome], count)
        yield requests
        latency = HistogramMetricFamily(
            "socketdock_backend_latency_seconds",
            "Time for one backend request attempt.",
            labels=["kind"],
        )
        for kind, (counts, total) in self._latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_LABELS, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([kind], buckets, total)
        yield latency
