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
import ipaddress
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from socketdock.api import resources as api
from socketdock.api.anywhere import SocketsAnywhere
from socketdock.api.tags import SocketsWithTags, TagsResource
from socketdock.tuned.fastchannel import FastHTTPChannel
from socketdock.ops.metrics import Metrics
from socketdock.config.preflight import tcp_address
from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import IReach
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay


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
    registry: Registry, metrics: Metrics, clock: IReactorTime, max_message_size: int,
    reach: Optional[IReach] = None, anywhere: bool = False,
) -> dict[bytes, Resource]:
    """
    The callback API's resources by first path segment.

    :param reach: answers the tag routes (and ``/socket/<id>/tags``);
        L{LocalReach} over ``registry`` when not given.
    :param anywhere: answer every ``/socket/<id>`` route through ``reach``
        too, for connections other instances hold (cluster mode).
    """
    if reach is None:
        reach = LocalReach(registry)
    sockets = (SocketsAnywhere if anywhere else SocketsWithTags)(registry, max_message_size, reach)
    return {
        b"socket": sockets,
        b"tags": TagsResource(reach, max_message_size),
        b"status": api.StatusResource(metrics, clock, clock.seconds()),
        b"metrics": api.MetricsResource(metrics),
    }


def make_health(relay: Relay) -> dict[bytes, Resource]:
    """``/healthz`` and ``/readyz``: open to anyone, on every listener."""
    return {
        b"healthz": api.HealthResource(),
        b"readyz": api.HealthResource(lambda: relay.draining),
    }


class BoundedRequest(Request):
    """
    A request whose body may not pass its site's ``max_body``.

    twisted.web would otherwise read any body into memory or a temporary file
    before a resource sees it.  A declared ``Content-Length`` over the limit is
    answered 413 before a byte of the body is read; a chunked body is cut off
    with 413 once it passes the limit.  Either way the connection is closed, as
    the rest of the body would otherwise have to be read to find the next request.
    """

    def __init__(self, channel, *args, **kwargs) -> None:
        super().__init__(channel, *args, **kwargs)
        self._body_left: int = channel.site.max_body
        self._too_large = False

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self._body_left:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._body_left -= len(data)
        if self._body_left < 0:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Already answered; only reachable when the rest of a chunked body
        # was in the same read as the chunk that passed the limit.
        if not self._too_large:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._too_large = True
        # Answered here, so no "100 Continue" may follow.
        self.requestHeaders.removeHeader(b"expect")
        channel: Any = self.channel  # an HTTPChannel built by QuietSite
        reason = f"body larger than max_message_size ({channel.site.max_body} bytes)\n"
        body = reason.encode("ascii")
        channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        channel.loseConnection()


class QuietSite(Site):
    """
    A ``Site`` tuned for an API: no form parsing of POST bodies (they are JSON
    or frames, never forms) and no access log line per request (a relay's
    requests are counted in ``/metrics`` instead, at a fraction of the cost).

    :param max_body: the largest request body accepted (see L{BoundedRequest});
        None for no limit of our own.
    """

    # httptools-parsed HTTP/1.1; resources still get real Requests.
    protocol = FastHTTPChannel

    def __init__(self, root: Resource, reactor, max_body: Optional[int] = None) -> None:
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor)
        if max_body is not None:
            self.requestFactory = BoundedRequest
        self.max_body = max_body

    def log(self, request: Request) -> None:
        pass


def make_site(root: Resource, reactor, max_body: Optional[int] = None) -> Site:
    """The site that serves one listener; bodies over ``max_body`` get 413."""
    return QuietSite(root, reactor, max_body)


_log = Logger()


def warn_if_exposed(api_endpoint: str, token: Optional[str], log: Logger = _log) -> bool:
    """
    Log a warning when the callback API listens beyond loopback without a
    token: anyone who can reach it and learns an id could then talk to, or
    close, that client.

    :param api_endpoint: the endpoint string the callback API is served on.
    :returns: whether it warned.
    """
    if token:
        return False
    try:
        address = tcp_address(api_endpoint)
    except ValueError:  # preflight refuses such strings before we get here
        return False
    if address is None:  # unix sockets and the like: file permissions guard them
        return False
    interface = address[0]
    if _is_loopback(interface):
        return False
    log.warn(
        "the callback API listens on {interface} ({endpoint}) without api_token: "
        "anyone who can reach it may send to or close any connection whose id they "
        "learn; set api_token, or bind api_listen to a loopback or private interface",
        interface=interface or "every interface", endpoint=api_endpoint,
    )
    return True


def _is_loopback(interface: str) -> bool:
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False
