"""
The callback API's common ground (SPEC §4): plain-text, ``OK`` and JSON
answers, the resource every route is (:class:`ApiResource`), reading a body
(a frame, a close request, JSON), and the instance's own routes (status,
metrics, health).  The ``/socket/<id>`` tree is :mod:`socketdock.api.sockets`.

Every error is a status with a one-line plain-text reason, never an HTML page
or a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from socketdock import __version__
from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import is_text

_PLAIN = b"text/plain; charset=utf-8"
_JSON = b"application/json"
_MAX_REASON_BYTES = 123  # what fits in a close frame (RFC 6455 §5.5)


def plain(request: Request, status: int, text: str) -> bytes:
    """Answer with ``status`` and a one-line plain-text reason."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", _PLAIN)
    return text.encode("utf-8") + b"\n"


def ok(request: Request, _: object = None) -> bytes:
    """Answer 200 with exactly ``OK``, no newline: the original's answer to
    ``send`` and ``disconnect``, which backends compare (SPEC §4).  Whatever
    the reach fired with is ignored."""
    request.setHeader(b"content-type", _PLAIN)
    return b"OK"


def as_json(request: Request, value: object) -> bytes:
    """Answer 200 with a JSON document."""
    request.setHeader(b"content-type", _JSON)
    return json.dumps(value).encode("utf-8")


class ApiResource(Resource):
    """
    A resource whose unsupported methods get a plain-text 405 (twisted.web's
    default is an HTML page).  ``HEAD`` is served wherever ``GET`` is.

    What it does with a request body is known from the request line alone
    (see :func:`body_plan`): :meth:`refusal` is its 404 or 405, and :meth:`body_limit` says
    how much body a method's handler reads.  A route that reads a body
    overrides :meth:`body_limit`; every other body is dropped unread.
    """

    def refusal(self, request: Request) -> bytes | None:
        """
        The 404 or 405 for a request this resource does not serve, decided
        from the request line alone; None when it serves it.
        """
        if self.isLeaf and request.postpath:
            # A leaf would otherwise answer for any path below it (/status/x).
            return plain(request, 404, "no such path")
        if self._handler(request) is not None:
            return None
        allowed = sorted(
            name[len("render_") :]
            for name in dir(self)
            if name.startswith("render_") and name != "render_HEAD"
        )
        if "GET" in allowed:
            allowed.append("HEAD")
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        return plain(request, 405, f"method {request.method.decode('latin-1')} not allowed here")

    def body_limit(self, request: Request) -> int:
        """The most body bytes this resource reads for ``request``; 0 if it reads none."""
        return 0

    def render(self, request: Request):
        handler = self._handler(request)
        if handler is None or (self.isLeaf and request.postpath):
            return self.refusal(request)
        return handler(request)

    def _handler(self, request: Request):
        # HEAD is GET without the body (twisted.web drops it); Resource's own
        # render_HEAD would call a render_GET that may not exist.
        method = b"GET" if request.method == b"HEAD" else request.method
        return getattr(self, "render_" + method.decode("ascii", "replace"), None)


def body_plan(resource: Resource, request: Request) -> tuple[bytes | None, int]:
    """
    What ``resource`` will do with the body of ``request``, from the request
    line and headers alone, so that a body is never read for nothing.

    :returns: an answer to give at once, before any body is read (a 401, 404
        or 405 from :meth:`ApiResource.refusal` or the root's), with 0; or None
        with the most body bytes the resource reads (0 for one that reads
        none: its body may be dropped as it arrives).
    """
    refusal = getattr(resource, "refusal", None)
    answer = refusal(request) if refusal is not None else None
    if answer is not None:
        return answer, 0
    limit = getattr(resource, "body_limit", None)
    return None, limit(request) if limit is not None else 0


class NotFound(ApiResource):
    """Every unknown path: 404 with a plain-text reason."""

    isLeaf = True

    def refusal(self, request: Request) -> bytes:
        return plain(request, 404, "no such path")


class Unauthorized(ApiResource):
    """Any path without the right bearer token: nothing about it is revealed."""

    isLeaf = True

    def refusal(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="socketdock"')
        return plain(request, 401, "missing or wrong bearer token")


#: The most bytes a close body (``{"code": ..., "reason": ...}``) may have.
CLOSE_BODY_LIMIT = 4096


class BadBody(Exception):
    """
    A request body a route cannot use.

    :param status: the 4xx to answer with.
    :param reason: the one-line reason to give.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_body(request: Request, limit: int) -> bytes:
    """
    The whole body of ``request``, refused (413) past ``limit`` bytes rather
    than cut short.

    :raises BadBody: when the body is longer than ``limit``.
    """
    assert request.content is not None  # twisted.web sets it before rendering
    body = request.content.read(limit + 1)
    if len(body) > limit:
        raise BadBody(413, f"body larger than {limit} bytes")
    return body


#: The deepest nesting of arrays and objects a JSON body may have (routes need 3).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')


def _nesting(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (strings skipped; valid or not)."""
    deepest = depth = 0
    for char in _JSON_STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(body: bytes) -> object:
    """
    The JSON value in ``body``, for routes that take JSON.

    Anything ``json.loads`` would choke on in a way that is not a
    ``ValueError`` -- nesting past the recursion limit, or a lone surrogate
    escape (``"\\ud800"``) that no UTF-8 encoder accepts later -- is refused
    here as bad input, so a caller cannot turn it into a 500.

    :raises BadBody: (400) for a body that is not UTF-8 JSON text.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody(400, "body is not valid UTF-8") from None
    if _nesting(text) > MAX_JSON_DEPTH:
        # Decided here: where json.loads gives up varies by Python version.
        raise BadBody(400, "body is JSON nested too deeply")
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadBody(400, "body is JSON nested too deeply") from None
    except ValueError:
        raise BadBody(400, "body is not valid JSON") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadBody(400, "body has a string that is not valid Unicode (lone surrogate)") from None
    return value


def read_frame(request: Request, max_size: int) -> tuple[bytes, bool]:
    """
    A callback body as one frame, by SPEC §4's rule: ``(payload, is_binary)``.

    :raises BadBody: (413) over ``max_size``, (400) a ``text/*`` body that is
        not UTF-8.
    """
    assert request.content is not None  # twisted.web sets it before rendering
    body = request.content.read(max_size + 1)
    if len(body) > max_size:
        raise BadBody(413, f"message larger than max_message_size ({max_size} bytes)")
    is_binary = not is_text(request.requestHeaders)
    if not is_binary:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody(400, "text/* body is not valid UTF-8") from None
    return body, is_binary


def close_request(body: bytes) -> tuple[int, str]:
    """
    The close code and reason a backend asked for.

    An empty body means a normal close (1000) with no reason, as the
    original accepted it.

    :raises BadBody: (400) with a one-line complaint.
    """
    if not body.strip():
        return 1000, ""
    asked = parse_json(body)
    if not isinstance(asked, dict):
        raise BadBody(400, "body must be empty or a JSON object")
    code = asked.get("code", 1000)
    reason = asked.get("reason", "")
    if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
        raise BadBody(400, "code must be 1000 or 3000-4999")
    if not isinstance(reason, str):
        raise BadBody(400, "reason must be a string")
    if len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
        raise BadBody(400, f"reason longer than {_MAX_REASON_BYTES} bytes")
    return code, reason


class StatusResource(ApiResource):
    """``GET /status``: the instance's figures as JSON."""

    isLeaf = True

    def __init__(self, metrics: Metrics, clock: IReactorTime, started: float) -> None:
        super().__init__()
        self._metrics = metrics
        self._clock = clock
        self._started = started

    def render_GET(self, request: Request) -> bytes:
        status = {
            "version": __version__,
            "uptime_seconds": round(self._clock.seconds() - self._started, 3),
        }
        status.update(self._metrics.status())
        return as_json(request, status)


class MetricsResource(ApiResource):
    """``GET /metrics``: Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self._metrics.exposition()


class HealthResource(ApiResource):
    """``/healthz`` (always 200) or ``/readyz`` (503 while draining)."""

    isLeaf = True

    def __init__(self, draining: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self._draining = draining

    def render_GET(self, request: Request) -> bytes:
        if self._draining():
            return plain(request, 503, "draining")
        return plain(request, 200, "OK")
