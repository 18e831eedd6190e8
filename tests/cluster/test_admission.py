"""SubscribingBackend: an admission with tags waits for their subscriptions."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.backend import Admission, ConnectRefused


class _Subscriptions:
    """Holds that fire when the test says so."""

    def __init__(self) -> None:
        self.holds: dict[str, int] = {}
        self.waiting: list[Deferred] = []

    def hold(self, tag: str) -> Deferred:
        self.holds[tag] = self.holds.get(tag, 0) + 1
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d

    def release(self, tag: str) -> None:
        self.holds[tag] -= 1


class _Backend:
    admits = True

    def __init__(self, answer) -> None:
        self._answer = answer

    def connect(self, connection_id, headers, offered, context=None):
        return self._answer


class SubscribingBackendTests(SynchronousTestCase):
    """The wrapper around the relay's backend in cluster mode."""

    def wrap(self, answer):
        from socketdock.cluster.admission import SubscribingBackend

        self.subscriptions = _Subscriptions()
        # Doubles with only what the wrapper calls.
        backend: Any = _Backend(answer)
        subscriptions: Any = self.subscriptions
        return SubscribingBackend(backend, subscriptions)

    def test_waits_for_subscriptions(self):
        """The admission reaches the protocol only once every tag is subscribed; the holds are then released."""
        backend = self.wrap(succeed(Admission("p", ("a", "b"))))
        seen = []

        def protocol_admits(admission):
            # The protocol tags the connection here: its own holds join ours.
            seen.append((admission, dict(self.subscriptions.holds)))

        backend.connect("c" * 32, {}, []).addCallback(protocol_admits)
        self.assertEqual(seen, [])
        self.subscriptions.waiting[0].callback(None)
        self.assertEqual(seen, [])
        self.subscriptions.waiting[1].callback(None)
        self.assertEqual(seen, [(Admission("p", ("a", "b")), {"a": 1, "b": 1})])
        self.assertEqual(self.subscriptions.holds, {"a": 0, "b": 0})

    def test_untagged_and_refused_pass_straight(self):
        """No tags: no wait. A refusal passes through unchanged."""
        backend = self.wrap(succeed(Admission()))
        self.assertEqual(self.successResultOf(backend.connect("c" * 32, {}, [])), Admission())
        self.assertTrue(backend.admits)
        from twisted.internet.defer import fail

        backend = self.wrap(fail(ConnectRefused(403, "no")))
        failure = self.failureResultOf(backend.connect("c" * 32, {}, []), ConnectRefused)
        self.assertEqual(failure.value.status, 403)
