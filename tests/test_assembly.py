"""
make_service's order (docs/design.rst, "Assembly"): what an instance is made
of, and in which order its services start, in each mode; no socket is opened.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.assembly import make_service
from socketdock.config.settings import load_config
from socketdock.tuning import choose_stack

LISTEN = "tcp:0:interface=127.0.0.1"


def children(service) -> list[str]:
    return [type(child).__name__ for child in service]


class OrderTests(SynchronousTestCase):
    def build(self, **settings: str):
        config = load_config({"listen": LISTEN, **settings}, {}, None)
        return make_service(config, MemoryReactorClock(), choose_stack("off"))

    def test_alone(self) -> None:
        """Alone, with no journal: the patches and the runtime metrics, then the listener."""
        self.assertEqual(
            children(self.build()),
            ["TuningService", "RuntimeMetrics", "StreamServerEndpointService"],
        )

    def test_journal_starts_before_the_listener(self) -> None:
        """The journal's recovered notices are queued before the first client comes."""
        service = self.build(journal=self.mktemp())
        self.assertEqual(
            children(service),
            ["TuningService", "RuntimeMetrics", "JournalService", "StreamServerEndpointService"],
        )

    def test_cluster_node_starts_before_the_listener_and_is_served(self) -> None:
        """
        The node starts before the listener, and it was served the reach by
        then: a message on its link is the reach's to count, in /status.
        """
        from socketdock.cluster.node import ClusterNode

        service = self.build(cluster="redis://127.0.0.1:1/3", externalhostandport="127.0.0.1:8")
        self.assertEqual(
            children(service),
            ["TuningService", "RuntimeMetrics", "ClusterNode", "StreamServerEndpointService"],
        )
        (node,) = [child for child in service if isinstance(child, ClusterNode)]
        node.message(b"socketdock:3:tag:dGFn", b"not a tag request")
        self.assertEqual(node.status()["messages_dropped"], 1)
