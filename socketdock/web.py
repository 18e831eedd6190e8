"""
The HTTP front: which path goes where, and who may ask.

One tree serves both listeners' needs: the WebSocket upgrade on ``wspath``
(never behind the token: clients do not have it), ``/healthz`` and ``/readyz``
(open, for load balancers), and the callback API behind the bearer token when
one is set.  The token is checked before any routing, so a caller without it
learns nothing about which paths or ids exist.
"""

from __future__ import annotations

import hmac
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from socketdock import api
from socketdock.metrics import Metrics
from socketdock.registry import Registry
from socketdock.relay import Relay


class Root(Resource):
    """
    The root of the tree.

    :param ws: the upgrade resource and the path it is served at, or None on
        a listener that serves only the callback API.
    :param api_children: the callback API by first path segment, or None on a
        listener that serves only WebSockets.
    :param token: the bearer token the API demands, or None.
    """

    def __init__(
        self,
        ws: Optional[tuple[str, Resource]],
        api_children: Optional[dict[bytes, Resource]],
        health: dict[bytes, Resource],
        token: Optional[str],
    ) -> None:
        super().__init__()
        self._ws_segments: list[bytes] = []
        self._ws: Optional[Resource] = None
        if ws is not None:
            path, resource = ws
            self._ws_segments = [s.encode("utf-8") for s in path.strip("/").split("/") if s]
            self._ws = resource
        self._api = api_children
        self._health = health
        self._expected = b"bearer " + token.encode("utf-8") if token else None

    def _authorized(self, request: Request) -> bool:
        if self._expected is None:
            return True
        given = request.getHeader(b"authorization") or b""
        # The scheme name is case-insensitive (RFC 7235 §2.1); the token is not.
        scheme, _, credentials = given.partition(b" ")
        return hmac.compare_digest(scheme.lower() + b" " + credentials, self._expected)

    def getChildWithDefault(self, name: bytes, request: Request) -> Resource:
        if self._ws is not None and self._ws_segments and name == self._ws_segments[0]:
            rest = self._ws_segments[1:]
            if request.postpath[: len(rest)] == rest:
                del request.postpath[: len(rest)]
                return self._ws
        if name in self._health:
            return self._health[name]
        if self._api is None:
            return api.NotFound()
        if not self._authorized(request):
            return api.Unauthorized()
        return self._api.get(name) or api.NotFound()

    def render(self, request: Request):
        if self._ws is not None and not self._ws_segments:
            return self._ws.render(request)
        if self._api is not None and not self._authorized(request):
            return api.Unauthorized().render(request)
        return api.plain(request, 404, "no such path")


def make_api_children(
    registry: Registry, metrics: Metrics, clock: IReactorTime, max_message_size: int
) -> dict[bytes, Resource]:
    """The callback API's resources by first path segment."""
    return {
        b"socket": api.SocketsResource(registry, max_message_size),
        b"status": api.StatusResource(metrics, clock, clock.seconds()),
        b"metrics": api.MetricsResource(metrics),
    }


def make_health(relay: Relay) -> dict[bytes, Resource]:
    """``/healthz`` and ``/readyz``: open to anyone, on every listener."""
    return {
        b"healthz": api.HealthResource(),
        b"readyz": api.HealthResource(lambda: relay.draining),
    }


class QuietSite(Site):
    """
    A ``Site`` tuned for an API: no form parsing of POST bodies (they are JSON
    or frames, never forms) and no access log line per request (a relay's
    requests are counted in ``/metrics`` instead, at a fraction of the cost).
    """

    def __init__(self, root: Resource, reactor) -> None:
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor)

    def log(self, request: Request) -> None:
        pass


def make_site(root: Resource, reactor) -> Site:
    """The site that serves one listener."""
    return QuietSite(root, reactor)
