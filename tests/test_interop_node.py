"""
Node ``ws`` (the stack of Credo-based wallets and mediators) against a real
SocketDock over loopback; the client is tests/interop/client.js.
"""

from twisted.trial.unittest import TestCase

from tests.interop.support import HERE, ClientScenarios, which

_NODE = which("node")


def _skip_reason():
    if _NODE is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "ws").is_dir():
        return "the ws package is not installed: run npm install in tests/interop"
    return None


class NodeWsTests(ClientScenarios, TestCase):
    """The shared client checks, with the Node ws client."""

    skip = _skip_reason()

    def client_argv(self, url, mode):
        return [_NODE, str(HERE / "client.js"), url, mode]
