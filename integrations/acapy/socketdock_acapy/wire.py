"""
SocketDock's wire format, as a backend sees it: pure functions with no
ACA-Py or aiohttp import, so they can be tested anywhere.

- :func:`verify_signature` checks ``X-SocketDock-Signature``.
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
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

SIGNATURE_HEADER = "X-SocketDock-Signature"
#: How far a signature's timestamp may be from our clock, either way.
SIGNATURE_WINDOW = 300


class BadRequest(Exception):
    """The POST cannot be used; the text says why (one line)."""


class BadSignature(Exception):
    """The signature is missing, malformed, stale or wrong."""


def sign(secret: Union[str, bytes], body: bytes, now: Optional[float] = None) -> str:
    """The header value SocketDock sends: ``t=<unix>,v1=<hex>``."""
    t = str(int(time.time() if now is None else now))
    return f"t={t},v1={_mac(secret, t, body)}"


def _mac(secret: Union[str, bytes], t: str, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, t.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: Union[str, bytes],
    header: Optional[str],
    body: bytes,
    now: Optional[float] = None,
    window: float = SIGNATURE_WINDOW,
) -> None:
    """
    Raise :class:`BadSignature` unless ``header`` is a valid signature of the
    raw ``body`` under ``secret``, made within ``window`` seconds of ``now``.
    More than one ``v1=`` is accepted (any may match), as during a rotation.
    """
    if not header:
        raise BadSignature("no X-SocketDock-Signature header")
    t: Optional[str] = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            t = value
        elif key == "v1":
            candidates.append(value.lower())
    if t is None or not t.isdigit() or not candidates:
        raise BadSignature("malformed X-SocketDock-Signature header")
    current = time.time() if now is None else now
    if abs(current - int(t)) > window:
        raise BadSignature("X-SocketDock-Signature timestamp outside the window")
    expected = _mac(secret, t, body)
    # Compare every candidate, in constant time each.
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise BadSignature("X-SocketDock-Signature does not match")


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
    def parse(cls, body: bytes) -> "Notice":
        """Read a connect, message or disconnect body; :class:`BadRequest` if unusable."""
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
