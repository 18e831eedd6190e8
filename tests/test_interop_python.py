"""
Python ``websockets`` against a real SocketDock over loopback; the client
(tests/interop/client_websockets.py) runs in its own process on asyncio.
"""

import importlib.util
import sys

from twisted.trial.unittest import TestCase

from tests.interop.support import HERE, ClientScenarios


class PythonWebsocketsTests(ClientScenarios, TestCase):
    """The shared client checks, with the websockets client."""

    if importlib.util.find_spec("websockets") is None:
        skip = "websockets is not installed: pip install '.[test]'"

    def client_argv(self, url, mode):
        return [sys.executable, str(HERE / "client_websockets.py"), url, mode]
