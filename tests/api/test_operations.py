"""
What an operator reads: ``/status`` (SPEC §4), ``/metrics`` (Prometheus text),
``/healthz`` and ``/readyz``, on a real instance over loopback.
"""

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from socketdock import __version__
from socketdock.ops.metrics import Metrics
from socketdock.tuning import PIECES
from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase


def _families(text: bytes) -> dict:
    """Metric families by name, parsed by prometheus-client's own parser."""
    return {f.name: f for f in text_string_to_metric_families(text.decode("utf-8"))}


def _value(family, suffix: str = "", **labels) -> float:
    """The one sample of ``family`` named ``<name><suffix>`` with exactly ``labels``."""
    found = [
        s.value for s in family.samples if s.name == family.name + suffix and s.labels == labels
    ]
    if len(found) != 1:
        raise AssertionError(f"no single {family.name}{suffix} {labels}: {family.samples}")
    return found[0]


class OperationsTestCase(RelayTestCase):
    timeout = 30

    @inlineCallbacks
    def get(self, path, headers=None):
        code, response_headers, body = yield self.backend.request(
            "GET", self.relay.base + path, headers=headers
        )
        return code, response_headers, body

    @inlineCallbacks
    def status(self):
        code, headers, body = yield self.get("/status")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        return json.loads(body)

    @inlineCallbacks
    def metrics(self):
        code, headers, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        return _families(body)

    @inlineCallbacks
    def round_trip(self, text="hi"):
        """A client sends ``text``; the backend answers it through ``send``."""
        client = yield self.client()
        before = len(self.backend.messages)
        client.send_text(text)
        messages = yield self.backend.wait_for("message", before + 1)
        code, _ = yield self.backend.post_send(
            messages[-1]["meta"]["send"], b"re: " + text.encode()
        )
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"re: " + text.encode(), False))
        return client


class StatusTests(OperationsTestCase):
    @inlineCallbacks
    def test_fields_at_start(self):
        """/status has every SPEC §4 field, all zero before any traffic."""
        yield self.start()
        status = yield self.status()
        uptime = status.pop("uptime_seconds")
        tuning = status.pop("tuning")
        self.assertEqual(list(tuning), [piece.name for piece in PIECES])
        self.assertIsInstance(uptime, (int, float))
        self.assertGreaterEqual(uptime, 0)
        self.assertEqual(
            status,
            {
                "version": __version__,
                "connections": {"active": 0, "lifetime": 0},
                "messages": {"in": 0, "out": 0},
                "backend": {"failures": 0, "retries": 0},
            },
        )

    @inlineCallbacks
    def test_counts_move(self):
        """A round trip, a retried message and a refused one move every /status count."""
        yield self.start(backend_retries=2)
        client = yield self.round_trip("one")
        status = yield self.status()
        self.assertEqual(status["connections"], {"active": 1, "lifetime": 1})
        self.assertEqual(status["messages"], {"in": 1, "out": 1})
        self.backend.answer_next("message", Answer(503), Answer(200), Answer(400))
        client.send_text("two")
        client.send_text("three")
        yield self.backend.wait_for("message", 4)
        yield client.ping()
        status = yield self.status()
        self.assertEqual(status["messages"], {"in": 3, "out": 1})
        self.assertEqual(status["backend"], {"failures": 1, "retries": 1})
        yield client.close()
        yield self.backend.wait_for("disconnect", 1)
        status = yield self.status()
        self.assertEqual(status["connections"], {"active": 0, "lifetime": 1})

    @inlineCallbacks
    def test_head_and_method(self):
        """HEAD /status answers like GET without a body; POST gets 405."""
        yield self.start()
        code, _, body = yield self.backend.request("HEAD", self.relay.base + "/status")
        self.assertEqual((code, body), (200, b""))
        code, _headers, _ = yield self.backend.request("POST", self.relay.base + "/status")
        self.assertEqual(code, 405)


class MetricsTests(OperationsTestCase):
    @inlineCallbacks
    def test_families_after_traffic(self):
        """/metrics parses as Prometheus text and counts connections, messages, requests and latency."""
        yield self.start(backend_retries=2)
        self.backend.answer_next("message", Answer(503))
        client = yield self.round_trip()
        yield client.close(1000)
        yield self.backend.wait_for("disconnect", 1)
        families = yield self.metrics()
        self.assertEqual(families["socketdock_connections_active"].type, "gauge")
        self.assertEqual(_value(families["socketdock_connections_active"]), 0)
        self.assertEqual(_value(families["socketdock_connections_opened"], "_total"), 1)
        self.assertEqual(
            _value(families["socketdock_connections_closed"], "_total", code="1000"), 1
        )
        messages = families["socketdock_messages"]
        self.assertEqual(_value(messages, "_total", direction="in"), 1)
        self.assertEqual(_value(messages, "_total", direction="out"), 1)
        requests = families["socketdock_backend_requests"]
        self.assertEqual(requests.type, "counter")
        self.assertEqual(_value(requests, "_total", kind="message", outcome="503"), 1)
        self.assertEqual(_value(requests, "_total", kind="message", outcome="200"), 1)
        self.assertEqual(_value(requests, "_total", kind="disconnect", outcome="200"), 1)
        self.assertEqual(_value(families["socketdock_backend_retries"], "_total"), 1)
        self.assertEqual(_value(families["socketdock_backend_failures"], "_total"), 0)
        latency = families["socketdock_backend_latency_seconds"]
        self.assertEqual(latency.type, "histogram")
        self.assertEqual(_value(latency, "_count", kind="message"), 2)
        self.assertEqual(_value(latency, "_bucket", kind="message", le="+Inf"), 2)
        self.assertGreater(_value(latency, "_sum", kind="message"), 0)

    @inlineCallbacks
    def test_queue_depth(self):
        """The queue-depth gauge counts the message in flight and those behind it."""
        yield self.start()
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        yield self.backend.wait_for("message", 1)
        yield client.ping()
        families = yield self.metrics()
        self.assertEqual(_value(families["socketdock_queue_depth"]), 2)
        self.backend.release(self.backend.stalled[0], Answer())
        yield self.backend.wait_for("message", 2)
        yield client.ping()
        families = yield self.metrics()
        self.assertEqual(_value(families["socketdock_queue_depth"]), 0)


class FreshMetricsTests(SynchronousTestCase):
    def test_latency_series_exist_before_traffic(self):
        """The latency histogram has a zero series per request kind before any request."""
        metrics = Metrics(active=lambda: 0, queued=lambda: 0)
        latency = _families(metrics.exposition())["socketdock_backend_latency_seconds"]
        for kind in ("connect", "message", "disconnect"):
            self.assertEqual(_value(latency, "_count", kind=kind), 0)

    def test_latency_buckets_are_cumulative_and_inclusive(self):
        """A time equal to a bound counts in that bucket; one past every bound only in +Inf."""
        metrics = Metrics(active=lambda: 0, queued=lambda: 0)
        for seconds in (0.0025, 0.003, 60.0):
            metrics.backend_request("message", "200", seconds)
        families = _families(metrics.exposition())
        latency = families["socketdock_backend_latency_seconds"]
        self.assertEqual(_value(latency, "_bucket", kind="message", le="0.001"), 0)
        self.assertEqual(_value(latency, "_bucket", kind="message", le="0.0025"), 1)
        self.assertEqual(_value(latency, "_bucket", kind="message", le="10.0"), 2)
        self.assertEqual(_value(latency, "_bucket", kind="message", le="+Inf"), 3)
        self.assertAlmostEqual(_value(latency, "_sum", kind="message"), 60.0055)
        requests = families["socketdock_backend_requests"]
        self.assertEqual(_value(requests, "_total", kind="message", outcome="200"), 3)

    def test_gauges_read_their_sources_once_given(self):
        """
        Metrics made before the relay read zero until read_from names the
        sources; then scrapes and /status read them, cluster figures included.
        """
        metrics = Metrics()
        families = _families(metrics.exposition())
        self.assertEqual(_value(families["socketdock_queue_depth"]), 0)
        self.assertNotIn("socketdock_cluster_up", families)
        status = {"link": "up", "messages_dropped": 2}
        metrics.read_from(active=lambda: 5, queued=lambda: 7, cluster=lambda: status)
        families = _families(metrics.exposition())
        self.assertEqual(_value(families["socketdock_queue_depth"]), 7)
        self.assertEqual(_value(families["socketdock_connections_active"]), 5)
        self.assertEqual(_value(families["socketdock_cluster_up"]), 1)
        self.assertEqual(metrics.status()["connections"]["active"], 5)
        self.assertEqual(metrics.status()["cluster"], status)


class HealthTests(OperationsTestCase):
    @inlineCallbacks
    def test_open_without_token(self):
        """/healthz and /readyz answer 200 without the bearer token that /status needs."""
        yield self.start(api_token="sekrit")
        for path in ("/healthz", "/readyz"):
            code, _headers, body = yield self.get(path)
            self.assertEqual((code, body), (200, b"OK\n"), path)
        code, _, _ = yield self.get("/status")
        self.assertEqual(code, 401)
        code, _, _ = yield self.get("/status", {b"Authorization": b"Bearer sekrit"})
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_readyz_503_while_draining(self):
        """While a stop drains a stalled message, /readyz is 503 and /healthz stays 200."""
        yield self.start(shutdown_timeout=20)
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("slow")
        yield self.backend.wait_for("message", 1)
        drained = self.relay.service.stopService()
        info = yield client.closed
        self.assertEqual(info[1], 1001)
        code, _, body = yield self.get("/readyz")
        self.assertEqual((code, body), (503, b"draining\n"))
        code, _, _ = yield self.get("/healthz")
        self.assertEqual(code, 200)
        self.assertNoResult(drained)
        self.backend.release(self.backend.stalled[0], Answer())
        yield drained
        self.assertEqual(len(self.backend.disconnects), 1)


class StandardMetricsTests(OperationsTestCase):
    @inlineCallbacks
    def test_process_gc_and_reactor_lag_series(self):
        """/metrics, read by prometheus-client's parser, has process_*, GC pause and reactor-lag series."""
        import gc

        yield self.start()
        gc.collect()
        families = yield self.metrics()
        for name in (
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ):
            self.assertIn(name, families)
        pauses = families["socketdock_gc_pause_seconds"]
        self.assertEqual(pauses.type, "histogram")
        self.assertGreaterEqual(_value(pauses, "_count", generation="2"), 1)
        self.assertGreater(_value(families["process_open_fds"]), 0)
        lag = families["socketdock_reactor_lag_seconds"]
        self.assertEqual(lag.type, "histogram")
        self.assertGreaterEqual(_value(lag, "_count"), 0)
