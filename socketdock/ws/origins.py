"""
Which browser origins may open a WebSocket (``allowed_origins``, SPEC §2, §4).

Autobahn's own check matches its patterns against ``scheme://host:port`` with
the port always spelled out, so ``https://*.example.com`` never matched
``https://app.example.com``; and it refuses with 400 where SPEC §4 says 403.
So SocketDock lets Autobahn accept every origin and checks here instead.

A pattern is ``[scheme://]host[:port]``; ``*`` matches any run of characters
and ``*`` alone matches every origin (``null`` included).  Without a port a
pattern means the scheme's default port, as an Origin without one does;
without a scheme it means any scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _glob(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.IGNORECASE)


def _split(text: str) -> tuple[str, str, str]:
    """``(scheme, host, port)``; empty strings for parts not written."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "", scheme
    rest = rest.split("/", 1)[0]  # an Origin has no path; never match one
    if rest.startswith("["):  # an IPv6 literal
        end = rest.find("]") + 1
        host, tail = rest[:end], rest[end:]
        return scheme, host, tail[1:] if tail.startswith(":") else ""
    host, _, port = rest.partition(":")
    return scheme, host, port


class OriginPolicy:
    """
    The compiled ``allowed_origins`` patterns.

    :param patterns: as in the setting, e.g. ``("https://*.example.com",)``.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._any = False
        self._rules: list[tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str] | None]] = []
        for pattern in patterns:
            if pattern.strip() == "*":
                self._any = True
                continue
            scheme, host, port = _split(pattern)
            self._rules.append((_glob(scheme or "*"), _glob(host), _glob(port) if port else None))

    def allows(self, origin: str) -> bool:
        """Whether a handshake's ``Origin`` header value is accepted."""
        if self._any:
            return True
        scheme, host, port = _split(origin)
        scheme = scheme.lower()
        if not scheme or not host:
            return False  # "null", or not an origin at all
        default = _DEFAULT_PORTS.get(scheme, "")
        port = port or default
        for scheme_rule, host_rule, port_rule in self._rules:
            if not (scheme_rule.fullmatch(scheme) and host_rule.fullmatch(host)):
                continue
            if port_rule.fullmatch(port) if port_rule is not None else port == default:
                return True
        return False
