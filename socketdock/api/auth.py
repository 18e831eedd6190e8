"""
Who may use the callback API: the bearer tokens, and what a refusal leaves
behind for the operator.

A refused request is counted (``socketdock_api_refused_total{reason}``) and
logged at warn with the caller's address, once per address and minute: a
backend with a stale token after a rotation shows up at once, and a caller
retrying in a loop does not flood the log.
"""

from __future__ import annotations

import hmac

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from socketdock.config.secrets import Secrets
from socketdock.ops.metrics import Metrics
from socketdock.ops.ratelimit import OncePerWindow

__all__ = ["BearerTokens"]

_WHY = {
    "missing_token": "no bearer token",
    "wrong_token": "a bearer token that is not one of api_token's",
}


class BearerTokens:
    """
    Checks ``Authorization: Bearer <token>`` against the tokens in force.

    :param secrets: read per request, so a SIGHUP's new tokens apply at once.
    :param metrics: counts refusals; None counts nothing.
    :param clock: times the once-a-minute log lines.
    """

    _log = Logger()

    def __init__(
        self, secrets: Secrets, metrics: Metrics | None, clock: IReactorTime | None
    ) -> None:
        self._secrets = secrets
        self._metrics = metrics
        self._once = OncePerWindow(clock) if clock is not None else None

    @property
    def required(self) -> bool:
        """Whether any token is set (else every request is admitted)."""
        return bool(self._secrets.api_tokens)

    def check(self, request: Request) -> str | None:
        """None when admitted, else the reason: ``missing_token`` or ``wrong_token``."""
        tokens = self._secrets.api_tokens
        if not tokens:
            return None
        given = request.getHeader(b"authorization") or b""
        # The scheme name is case-insensitive (RFC 7235 §2.1); the token is not.
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials:
            return "missing_token"
        # Every token is compared, in constant time, whichever matches.
        matched = False
        for token in tokens:
            matched |= hmac.compare_digest(credentials, token)
        return None if matched else "wrong_token"

    def refused(self, request: Request, reason: str) -> None:
        """Count one refusal and log it, once per address and minute."""
        if self._metrics is not None:
            self._metrics.api_refused(reason)
        if self._once is None:
            return
        address = request.getClientAddress()
        peer = getattr(address, "host", None) or str(address)
        held = self._once.occurred((peer, reason))
        if held is None:
            return
        self._log.warn(
            "refused a callback-API request from {peer} ({why}): 401{more}",
            peer=peer,
            reason=reason,
            why=_WHY[reason],
            held_back=held,
            more=f"; {held} more from it since the last such line" if held else "",
        )
