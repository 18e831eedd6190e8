"""
What a refused handshake may echo back and log, and how it is counted.

Autobahn's refusals quote the offending header verbatim (a 15 kB ``Upgrade``
header, ESC and BEL bytes included) in its log lines and in the HTTP status
line; a client can choose all of it.  Everything a refusal echoes goes
through :func:`printable` first, and the metric's ``reason`` label is one of
:data:`REASONS`, so neither the log nor the metrics grow with what a client
sends.
"""

from __future__ import annotations

from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION

#: Characters of a refusal reason kept in the log line and the status line.
REASON_LIMIT = 160

#: The ``reason`` label values of ``socketdock_handshakes_refused_total``.
REASONS = (
    "bad_request",
    "origin",
    "capacity",
    "pending",
    "rate",
    "draining",
    "backend",
    "error",
)


def printable(text: str, limit: int = REASON_LIMIT) -> str:
    """
    ``text`` as one line of printable ASCII, at most ``limit`` characters:
    control and non-ASCII characters become backslash escapes, and a longer
    text is cut and ends in ``...``.
    """
    escaped = text[: limit + 1].encode("unicode_escape").decode("ascii")
    if len(escaped) > limit or len(text) > limit:
        return escaped[: limit - 3] + "..."
    return escaped


def autobahn_reason(why: str, status: int) -> tuple[int, str]:
    """
    The status and ``reason`` label for a refusal Autobahn made itself while
    parsing the request (SocketDock's own refusals name theirs).  An Origin
    header it cannot use is an origin refusal: 403, as SPEC §4 says.
    """
    if why.startswith("HTTP Origin header"):
        return 403, "origin"
    if status >= 500:
        return status, "error"
    return status, "bad_request"


def bad_extension_offer(extensions) -> str | None:
    """
    Why a permessage-compress offer cannot be parsed, or None.  Autobahn
    parses them only after ``onConnect``, once the backend has admitted the
    client; checked first, a bad offer is refused without involving it.
    """
    for name, params in extensions:
        pmce = PERMESSAGE_COMPRESSION_EXTENSION.get(name)
        if pmce is None:
            continue
        try:
            pmce["Offer"].parse(params)  # type: ignore[attr-defined]  # autobahn types the table as dict[str, type]
        except Exception as e:
            return str(e)
    return None
