"""
SocketDock's wire format, as a backend sees it: pure functions with no
ACA-Py or aiohttp import, so they can be tested anywhere.

- :func:`verify_signature` checks ``X-SocketDock-Signature``; with
  :class:`SeenSignatures` a signed request is taken once.
- :func:`trusted_send_url` says whether a ``send`` URL names a trusted instance.
- :class:`Notice` reads a connect, message or disconnect POST body.
- :class:`SeqFilter` drops a retried message that was already taken.
- :func:`send_outcome` says what to do with the answer to a POST to the
  connection's ``send`` URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-SocketDock-Signature"
#: How far a signature's timestamp may be from our clock, either way.
SIGNATURE_WINDOW = 300
#: The most digits a timestamp may have (unix seconds until the year 5138).
_T_DIGITS = 11
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH = re.compile(r"(/[0-9A-Za-z._~%!$&'()*+,;=:@-]*)*")


class BadRequest(Exception):
    """The POST cannot be used; the text says why (one line)."""


class BadSignature(Exception):
    """The signature is missing, malformed, stale or wrong."""


def sign(
    secret: Union[str, bytes],
    body: bytes,
    now: Optional[float] = None,
    method: Optional[str] = None,
    target: Optional[str] = None,
) -> str:
    """
    The header value SocketDock sends: ``t=<unix>,v1=<hex>``, and
    ``,v2=<hex>`` when the request's ``method`` and ``target`` (its path and
    query, as on the request line) are given.
    """
    t = str(int(time.time() if now is None else now))
    value = f"t={t},v1={_mac(secret, t, body)}"
    if method is not None and target is not None:
        value += f",v2={_mac_v2(secret, t, method, target, body)}"
    return value


def _key(secret: Union[str, bytes]) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _mac(secret: Union[str, bytes], t: str, body: bytes) -> str:
    return hmac.new(_key(secret), t.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _mac_v2(secret: Union[str, bytes], t: str, method: str, target: str, body: bytes) -> str:
    # "<t>.<METHOD> <target>\n" + body: a request target holds no space or LF,
    # so the route and the body cannot be traded for one another.
    head = f"{t}.{method} {target}\n".encode("utf-8")
    return hmac.new(_key(secret), head + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: Union[str, bytes],
    header: Optional[str],
    body: bytes,
    now: Optional[float] = None,
    window: float = SIGNATURE_WINDOW,
    method: Optional[str] = None,
    target: Optional[str] = None,
) -> str:
    """
    Raise :class:`BadSignature` unless ``header`` is a valid signature of the
    raw ``body`` under ``secret``, made within ``window`` seconds of ``now``.
    More than one ``v1=`` (or ``v2=``) is accepted (any may match), as during
    a rotation.  When the header has ``v2=`` and the request's ``method`` and
    ``target`` are given, ``v2`` must match: it signs the route too, so a
    body signed for one route is refused on another.

    :returns: what names this signed request among others (the v1 MAC of
        its timestamp and body), for :class:`SeenSignatures`.
    """
    if not header:
        raise BadSignature("no X-SocketDock-Signature header")
    t: Optional[str] = None
    v1: list[str] = []
    v2: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            t = value
        elif key in ("v1", "v2"):
            value = value.lower()
            # Only 64 hex digits can match; anything else is no candidate
            # (and compare_digest raises on non-ASCII text).
            if _HEX64.fullmatch(value):
                (v1 if key == "v1" else v2).append(value)
    # ASCII digits only, and few: int() of 5,000 digits raises, and "٣" is a digit to isdigit().
    if t is None or not (t.isascii() and t.isdigit() and len(t) <= _T_DIGITS):
        raise BadSignature("malformed X-SocketDock-Signature header")
    if not v1 and not v2:
        raise BadSignature("malformed X-SocketDock-Signature header")
    current = time.time() if now is None else now
    if abs(current - int(t)) > window:
        raise BadSignature("X-SocketDock-Signature timestamp outside the window")
    v1_expected = _mac(secret, t, body)
    if v2 and method is not None and target is not None:
        expected, candidates = _mac_v2(secret, t, method, target, body), v2
    else:
        expected, candidates = v1_expected, v1
    # Compare every candidate, in constant time each.
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise BadSignature("X-SocketDock-Signature does not match")
    return v1_expected


class SeenSignatures:
    """
    The signed requests taken within the window, so that a replayed one is
    refused even where its route is not signed (a ``v1``-only header).  A
    request is claimed when it arrives and released when it was not taken
    (SocketDock's retry then gets in); at most ``limit`` are remembered, the
    oldest forgotten first.
    """

    def __init__(self, window: float = SIGNATURE_WINDOW, limit: int = 100_000) -> None:
        self._window = window
        self._limit = limit
        self._seen: "OrderedDict[str, float]" = OrderedDict()

    def claim(self, key: str, now: Optional[float] = None) -> bool:
        """True if ``key`` was not taken within the window (it now is)."""
        current = time.time() if now is None else now
        seen = self._seen
        # Arrival order: the oldest are first.
        while seen and (len(seen) >= self._limit or next(iter(seen.values())) < current - 2 * self._window):
            seen.popitem(last=False)
        if key in seen:
            return False
        seen[key] = current
        return True

    def release(self, key: str) -> None:
        """The request named ``key`` was not taken: let it in again."""
        self._seen.pop(key, None)


def trusted_send_url(url: str, connection_id: str, bases: "tuple[str, ...]") -> bool:
    """
    Whether ``url`` is ``<base>/socket/<connection_id>/send`` for one of the
    trusted SocketDock base URLs ``bases`` (scheme and host compared without
    regard to case, the default port made explicit).
    """
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,128}", connection_id):
        return False
    wanted = _origin_and_path(url)
    if wanted is None:
        return False
    for base in bases:
        origin = _origin_and_path(base)
        if origin is not None and wanted == (origin[0], origin[1].rstrip("/") + f"/socket/{connection_id}/send"):
            return True
    return False


def _origin_and_path(url: str) -> "Optional[tuple[tuple[str, str, int], str]]":
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or parts.query or parts.fragment:
        return None
    if not re.fullmatch(r"[0-9A-Za-z.:-]+", parts.hostname or "") or not _PATH.fullmatch(parts.path):
        return None
    if parts.username is not None or parts.password is not None:
        return None
    if port is None:
        port = 443 if scheme == "https" else 80
    return (scheme, parts.hostname.lower(), port), parts.path


def parse_trusted_urls(text: Optional[str]) -> "tuple[str, ...]":
    """
    The comma-separated base URLs of ``SOCKETDOCK_TRUSTED_URLS``.

    :raises ValueError: one that is not an ``http(s)://host[:port][/path]`` URL, with the reason.
    """
    bases = tuple(u.strip() for u in (text or "").split(",") if u.strip())
    for base in bases:
        if _origin_and_path(base) is None:
            raise ValueError(f"{base!r} is not a base URL http(s)://host[:port][/path]")
    return bases


@dataclass(frozen=True)
class Notice:
    """One POST from SocketDock, read."""

    connection_id: str
    send: Optional[str] = None
    disconnect: Optional[str] = None
    seq: Optional[int] = None
    #: The message (``bytes`` when it was a base64-encoded binary frame).
    message: Union[str, bytes, None] = None
    binary: bool = False
    code: Optional[int] = None
    reason: str = ""
    initiator: Optional[str] = None
    recovered: bool = False
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body: bytes, kind: Optional[str] = None) -> "Notice":
        """
        Read a connect, message or disconnect body; :class:`BadRequest` if
        unusable, or, with ``kind`` (``connect``, ``message`` or
        ``disconnect``), when its shape is another kind's (SPEC §3): a
        message body sent to ``/disconnect`` closes nothing.
        """
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadRequest("body is not a JSON object")
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            raise BadRequest("no meta object")
        cid = meta.get("connection_id") or doc.get("connection_id")
        if not isinstance(cid, str) or not cid:
            raise BadRequest("no meta.connection_id")
        seq = meta.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise BadRequest("meta.seq is not an integer")
        message: Any = doc.get("message")
        binary = bool(meta.get("binary"))
        if message is not None:
            if not isinstance(message, str):
                raise BadRequest("message is not a string")
            if meta.get("encoding") == "base64":
                try:
                    message = base64.b64decode(message, validate=True)
                except ValueError:
                    raise BadRequest("message is not valid base64") from None
            elif meta.get("encoding") not in (None, ""):
                raise BadRequest(f"unknown meta.encoding {meta.get('encoding')!r}")
        if kind is not None:
            _check_shape(kind, doc, meta)
        code = meta.get("code")
        return cls(
            connection_id=cid,
            send=_str_or_none(meta.get("send")),
            disconnect=_str_or_none(meta.get("disconnect")),
            seq=seq,
            message=message,
            binary=binary,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            reason=meta.get("reason") or "",
            initiator=_str_or_none(meta.get("initiator")),
            recovered=bool(meta.get("recovered")),
            tags=tuple(t for t in meta.get("tags") or () if isinstance(t, str)),
        )


#: Per kind of notice: what its body must have, and what only other kinds have.
_SHAPES = {
    "connect": ((), ("message", "seq", "initiator", "code")),
    "message": (("message",), ("initiator", "code")),
    "disconnect": (("initiator",), ("message", "seq", "send")),
}


def _check_shape(kind: str, doc: dict, meta: dict) -> None:
    needed, foreign = _SHAPES[kind]
    for key in needed:
        if key not in doc and key not in meta:
            raise BadRequest(f"not a {kind} notice: no {key}")
    for key in foreign:
        if key in doc or key in meta:
            raise BadRequest(f"not a {kind} notice: it has {key}")


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


class SeqFilter:
    """
    Exactly-once intake by ``meta.seq``: SocketDock sends a connection's
    messages one at a time, in order, numbered from 1, and a retry carries
    the same number.  So a number at or below the highest taken is a
    duplicate.  A message without ``seq`` (an older SocketDock) is always
    taken.
    """

    def __init__(self) -> None:
        self.highest = 0

    def take(self, seq: Optional[int]) -> bool:
        """True if the message is new (and now counts as taken)."""
        if seq is None:
            return True
        if seq <= self.highest:
            return False
        self.highest = seq
        return True

    def give_back(self, seq: Optional[int]) -> None:
        """The message numbered ``seq`` could not be taken after all: let its retry in."""
        if seq is not None and seq == self.highest:
            self.highest = seq - 1


# What to do after a POST to ``send``.
DELIVERED = "delivered"  #: handed to the socket
GONE = "gone"  #: no such live connection (or the instance is gone): queue for pickup
RETRY = "retry"  #: try again later (503 + Retry-After, 5xx, 429, timeouts)
REFUSED = "refused"  #: final refusal of this message (400, 413, 401...)


def send_outcome(status: Optional[int]) -> str:
    """
    Classify the answer to a POST to ``send``; ``None`` means no answer
    arrived: the connection was refused, which SocketDock's README says
    means the instance is gone.
    """
    if status is None:
        return GONE
    if 200 <= status < 300:
        return DELIVERED
    if status in (404, 410):
        return GONE
    if status in (408, 429) or status >= 500:
        return RETRY
    return REFUSED


def retry_after(value: Optional[str], default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds form), capped at 30."""
    if value:
        try:
            return min(max(float(value.strip()), 0.0), 30.0)
        except ValueError:
            pass
    return default
