"""
The HTTP front: which path goes where, and who may ask.

One tree serves both listeners' needs: the WebSocket upgrade on ``wspath``
(never behind the token: clients do not have it), ``/healthz`` and ``/readyz``
(open, for load balancers), and the callback API behind the bearer token when
one is set.  The token is checked before any routing, so a caller without it
learns nothing about which paths or ids exist; and a request is routed on its
headers, before its body is read (:class:`BoundedRequest`).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import HTTPChannel, unquote
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from socketdock.api import resources as api
from socketdock.api.auth import BearerTokens
from socketdock.api.capped import Full, counted
from socketdock.api.listing import ConnectionsResource
from socketdock.api.sockets import SocketsResource
from socketdock.api.tags import TagsResource
from socketdock.config.endpoints import is_loopback, tcp_address
from socketdock.config.secrets import Secrets
from socketdock.ops.filelimit import ListenerCap
from socketdock.ops.metrics import Metrics
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
    :param tokens: the bearer tokens the API demands; a plain token (or None
        for none) is a fixed one whose refusals are neither counted nor logged.
    """

    def __init__(
        self,
        ws: tuple[str, Resource] | None,
        api_children: dict[bytes, Resource] | None,
        health: dict[bytes, Resource],
        tokens: BearerTokens | str | None,
    ) -> None:
        super().__init__()
        self._ws_segments: list[bytes] = []
        self._ws: Resource | None = None
        if ws is not None:
            path, resource = ws
            self._ws_segments = [s.encode("utf-8") for s in path.strip("/").split("/") if s]
            self._ws = resource
        self._api = api_children
        self._health = health
        if not isinstance(tokens, BearerTokens):
            tokens = BearerTokens(Secrets(api_tokens=(tokens,) if tokens else ()), None, None)
        self._tokens = tokens

    def _unauthorized(self, request: Request) -> api.Unauthorized | None:
        """The 401 for a request without a token in force (counted), else None."""
        reason = self._tokens.check(request)
        if reason is None:
            return None
        # Asked once per request: on its headers, or when it is rendered.
        self._tokens.refused(request, reason)
        return api.Unauthorized()

    def getChildWithDefault(self, name: bytes, request: Request) -> Resource:
        if self._ws is not None and self._ws_segments and name == self._ws_segments[0]:
            rest = self._ws_segments[1:]
            assert request.postpath is not None  # set during traversal
            if request.postpath[: len(rest)] == rest:
                del request.postpath[: len(rest)]
                return self._ws
        if name in self._health:
            return self._health[name]
        if self._api is None:
            return api.NotFound()
        return self._unauthorized(request) or self._api.get(name) or api.NotFound()

    def refusal(self, request: Request) -> bytes | None:
        """The 401 or 404 for the root itself; None where the upgrade is served at ``/``."""
        if self._ws is not None and not self._ws_segments:
            return None
        if self._api is not None:
            unauthorized = self._unauthorized(request)
            if unauthorized is not None:
                return unauthorized.refusal(request)
        return api.plain(request, 404, "no such path")

    def render(self, request: Request):
        refused = self.refusal(request)
        if refused is not None:
            return refused
        assert self._ws is not None
        return self._ws.render(request)


def make_api_children(
    registry: Registry,
    metrics: Metrics,
    clock: IReactorTime,
    max_message_size: int,
    reach: IReach | None = None,
    instance: Callable[[], str] = lambda: "",
) -> dict[bytes, Resource]:
    """
    The callback API's resources by first path segment.

    :param registry: this instance's connections, for ``/connections``.
    :param reach: answers ``/socket/<id>`` and the tag routes:
        :class:`LocalReach` over ``registry`` when not given, a cluster's
        reach in cluster mode (connections other instances hold).
    :param instance: this instance's name, for the listings (SPEC §9).
    """
    if reach is None:
        reach = LocalReach(registry, instance)
    return {
        b"socket": SocketsResource(reach, max_message_size),
        b"tags": TagsResource(reach, max_message_size),
        b"connections": ConnectionsResource(registry, instance),
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
    A request whose body is refused, dropped or kept according to the route
    it is for, decided once its headers are in and before a byte of body is
    read.

    twisted.web reads any body in full -- into a temporary file past 100 kB or
    when chunked -- before a resource sees the request, so a stranger could
    make the public listener hold a 4 MB body for a 404.  Here, when the
    channel reports the body's length (``gotLength``: ``HTTPChannel`` and
    ``FastHTTPChannel`` both call it once the headers are complete), the
    request is routed through the site's own tree -- the root's token check
    and routing, not a copy of them -- and :func:`socketdock.api.resources.body_plan` decides:

    - a refusal (401, 404, 405) is answered at once, body unread;
    - a route that reads no body has it dropped as it arrives;
    - a route that reads one keeps it in memory up to the lesser of its own
      limit and the site's ``max_body``: a declared ``Content-Length`` over
      that gets 413 at once, a chunked body once it passes.

    An early answer closes the connection, as the rest of the body would
    otherwise have to be read to find the next request.
    """

    def __init__(self, channel, *args, **kwargs) -> None:
        super().__init__(channel, *args, **kwargs)
        self._limit = 0
        self._answered = False
        # The traversal made on the headers, for QuietSite to reuse.
        self.routed: tuple[Resource, list[bytes], list[bytes]] | None = None

    def gotLength(self, length: int | None) -> None:
        # Never a temporary file: what is kept is bounded below, and the
        # resources read it into memory anyway.
        self.content = BytesIO()
        if length == 0:
            return  # no body: routed once received, as usual
        answer, limit = self._plan()
        if answer is not None:
            self._answer_now(answer)
            return
        channel: Any = self.channel  # built by QuietSite
        max_body = channel.site.max_body
        self._limit = limit if max_body is None else min(limit, max_body)
        if length is not None and self._limit and length > self._limit:
            self._too_large()

    def handleContentChunk(self, data: bytes) -> None:
        if self._answered or not self._limit:
            return  # answered already, or a route that reads no body
        assert self.content is not None  # gotLength made it
        if self.content.tell() + len(data) > self._limit:
            self._too_large()
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Already answered; reachable when the rest of the body was in the
        # same read as its headers.
        if not self._answered:
            super().requestReceived(command, path, version)

    def _plan(self) -> tuple[bytes | None, int]:
        # The request line, as both channels keep it until the request is
        # received (HTTPChannel's own attributes, mirrored by FastHTTPChannel).
        channel: Any = self.channel
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        self.path, _, query = self.uri.partition(b"?")
        # The query picks a route too (send?confirm=, SPEC §9).
        self.args = parse_qs(query, keep_blank_values=True)
        if self.path == b"*":
            return None, 0
        # As Request.process does before it asks the site for the resource.
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        resource = channel.site.getResourceFor(self)
        self.routed = (resource, self.prepath[:], self.postpath[:])
        return api.body_plan(resource, self)

    def _too_large(self) -> None:
        self._answer_now(api.plain(self, 413, f"body larger than {self._limit} bytes"))

    def _answer_now(self, body: bytes) -> None:
        """Answer with the status and headers set on this request, then close."""
        self._answered = True
        # Answered here, so no "100 Continue" may follow.
        self.requestHeaders.removeHeader(b"expect")
        self.responseHeaders.removeHeader(b"connection")
        head = [b"HTTP/1.1 %d %s\r\n" % (self.code, self.code_message)]
        for name, values in self.responseHeaders.getAllRawHeaders():
            head.extend(name + b": " + value + b"\r\n" for value in values)
        head.append(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        if self.method == b"HEAD":
            body = b""
        channel: Any = self.channel
        channel.transport.write(b"".join(head) + body)
        channel.loseConnection()


class PlainHTTPChannel(HTTPChannel):
    """
    twisted.web's own channel (the plain stack), refusing a line of the head
    that begins with a blank: an obs-fold continuation, which ``HTTPChannel``
    joins to the field before it (``Transfer-Encoding`` included) where RFC
    9112 §5.2 has a server refuse or replace it, or whitespace before the
    first field line (§2.2).  Answered 400 and closed, as its other refusals.

    It also stops reading from a client whose answers wait to be sent:
    ``HTTPChannel.pauseProducing`` (the transport's buffer is full) pauses
    reading only between requests, but answers are written while a request
    is handled, so a client that pipelined ``GET /healthz`` and read nothing
    was read from without end (issue 21).  Twisted's own ``requestDone`` and
    ``resumeProducing`` resume reading once the answers are sent.
    """

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self._handlingRequest:
            self._networkProducer.pauseProducing()

    def lineReceived(self, line: bytes) -> None:
        # ``persistent`` is false only after a request that closes the
        # connection, whose stray bytes HTTPChannel drops unanswered.
        if line[:1] in (b" ", b"\t") and self.persistent:
            self._respondToBadRequestAndDisconnect()
            return
        super().lineReceived(line)


class QuietSite(Site):
    """
    A ``Site`` tuned for an API: no form parsing of POST bodies (they are JSON
    or frames, never forms) and no access log line per request (a relay's
    requests are counted in ``/metrics`` instead, at a fraction of the cost).

    :param max_body: the largest request body accepted on any route (see
        :class:`BoundedRequest`); None for no limit but the routes' own.
    :param channel: the ``HTTPChannel`` class that parses each connection
        (:mod:`socketdock.tuning` picks it); resources get real Requests either way.
    """

    requestFactory = BoundedRequest
    # No "Starting factory" line per listener start (the listener's own line
    # says where it listens).
    noisy = False

    def __init__(
        self,
        root: Resource,
        reactor,
        max_body: int | None = None,
        channel: type[HTTPChannel] = PlainHTTPChannel,
        cap: ListenerCap | None = None,
    ) -> None:
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor)
        self.max_body = max_body
        self._cap = cap
        if cap is not None:
            channel = counted(channel)
        # Twisted types Site.protocol as a method; a channel class is what it holds.
        self.protocol = channel  # type: ignore[method-assign, assignment]

    def buildProtocol(self, addr):
        if self._cap is None:
            return super().buildProtocol(addr)
        release = self._cap.take()
        if release is None:
            return Full()
        channel = super().buildProtocol(addr)
        channel.release = release
        return channel

    def getResourceFor(self, request: Any) -> Resource:
        # A request with a body was routed on its headers already (see
        # BoundedRequest); the route cannot have changed since, so the
        # hot path (a POST to send) walks the tree once, not twice.
        routed = getattr(request, "routed", None)
        if routed is None:
            return super().getResourceFor(request)
        request.routed = None
        resource, request.prepath, request.postpath = routed
        request.site = self
        request.sitepath = []
        return resource

    def log(self, request: http.Request) -> None:
        pass


def make_site(
    root: Resource,
    reactor,
    max_body: int | None = None,
    channel: type[HTTPChannel] = PlainHTTPChannel,
    cap: ListenerCap | None = None,
) -> Site:
    """
    The site that serves one listener; see :class:`BoundedRequest` for its
    bodies, and :mod:`socketdock.api.capped` for ``cap``.
    """
    return QuietSite(root, reactor, max_body, channel, cap)


_log = Logger()


def warn_if_exposed(api_endpoint: str, token: str | bool | None, log: Logger = _log) -> bool:
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
    if is_loopback(interface):
        return False
    log.warn(
        "the callback API listens on {interface} ({endpoint}) without api_token: "
        "anyone who can reach it may send to or close any connection whose id they "
        "learn; set api_token, or bind api_listen to a loopback or private interface",
        interface=interface or "every interface",
        endpoint=api_endpoint,
    )
    return True
