"""
What treq does on every request that the relay's backend client has no use
for, and what we do about it.

``treq.HTTPClient.request`` wraps its agent in a new ``CookieAgent`` on every
call.  That wrapper builds a ``urllib.request.Request`` look-alike from the
URL (a full ``urlparse``) so the jar can inspect it, and a response
look-alike afterwards, even when the jar keeps nothing: ~18 µs per request,
about 5% of a relayed round trip.  The relay's jar is :class:`NoCookies`
(a backend does not get to set state in the relay), so for that jar the
wrapper is skipped; every other jar gets treq's ``CookieAgent`` as before.
"""

from __future__ import annotations

from http.cookiejar import CookieJar

import treq.client as _treq_client
from twisted.web.client import CookieAgent
from twisted.web.iweb import IAgent


class NoCookies(CookieJar):
    """
    A cookie jar that keeps nothing: a backend does not get to set state in
    the relay, and an empty jar still costs a cookie-policy walk per request.
    """

    def add_cookie_header(self, request) -> None:
        pass

    def extract_cookies(self, response, request) -> None:
        pass

    def set_cookie(self, cookie) -> None:
        pass


def _cookie_agent(agent: IAgent, jar: CookieJar) -> IAgent:
    """``CookieAgent(agent, jar)``, unless the jar keeps nothing: then ``agent``."""
    if type(jar) is NoCookies:
        return agent
    return CookieAgent(agent, jar)


def skip_cookie_agent_for_no_cookies() -> None:
    """
    Make treq's clients skip the cookie wrapper when their jar is
    :class:`NoCookies`.  Idempotent; leaves treq alone if it no longer uses
    Twisted's ``CookieAgent`` by that name.
    """
    if getattr(_treq_client, "CookieAgent", None) is CookieAgent:
        # A function standing in for the class: treq only calls it.
        _treq_client.CookieAgent = _cookie_agent  # type: ignore[misc, assignment]
