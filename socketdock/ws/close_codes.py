"""
What a client's close frame may carry (RFC 6455 §7.4): a code a peer may
send, and a UTF-8 reason; anything else fails the connection.  And which
code a connection Autobahn failed itself ends with, for the notice.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol

#: Close codes a peer may put in a close frame (RFC 6455 §7.4): the
#: registered ones Autobahn accepts, and 3000-4999.
VALID_CLOSE_CODES = frozenset(WebSocketServerProtocol.CLOSE_STATUS_CODES_ALLOWED)


def valid_close_code(code: int | None) -> bool:
    return code is None or code in VALID_CLOSE_CODES or 3000 <= code <= 4999


def is_utf8(raw: bytes | None) -> bool:
    try:
        (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def close_frame_fault(code: int | None, reason: bytes | None) -> tuple[int, str] | None:
    """
    The code and reason to fail the connection with for a client's close
    frame, or None when the frame is good: a code no peer may send (999,
    1005, 5000) or a reason that is not UTF-8.  The notice and the metric
    labels then carry our code, never the client's.
    """
    if not valid_close_code(code):
        return 1002, f"invalid close code {code}"
    if not is_utf8(reason):
        return 1007, "invalid close reason (not UTF-8)"
    return None


def local_failure(code: int | None, reason: str | bytes | None) -> tuple[int, str] | None:
    """
    The code and reason Autobahn failed the connection with itself (a
    protocol error, 1009), from its ``localCloseCode`` and
    ``localCloseReason``, or None when it did not.
    """
    if code is None:
        return None
    reason = reason or ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return code, reason
