"""treq skips its cookie wrapper for the relay's NoCookies jar, only for it, and only while engaged."""

from __future__ import annotations

from collections.abc import Generator
from http.cookiejar import CookieJar
from typing import Any

import treq.client as treq_client
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, CookieAgent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from socketdock.relay.httpclient import NoCookies
from socketdock.tuned.treq import skip_cookie_agent_for


class CookieEcho(Resource):
    """Sets a cookie, and answers with the Cookie header it was sent."""

    isLeaf = True

    def render_GET(self, request):
        request.addCookie(b"session", b"s1", path=b"/")
        return request.getHeader(b"cookie") or b"-"


class TreqTuningTests(TestCase):
    def setUp(self) -> None:
        self.undo = skip_cookie_agent_for(NoCookies)
        self.addCleanup(self.undo)

    def test_no_cookies_gets_the_bare_agent(self) -> None:
        agent = Agent(reactor)
        self.assertIs(treq_client.CookieAgent(agent, NoCookies()), agent)

    def test_other_jars_keep_the_cookie_agent(self) -> None:
        self.assertIsInstance(treq_client.CookieAgent(Agent(reactor), CookieJar()), CookieAgent)

    def test_installing_twice_changes_nothing(self) -> None:
        before = treq_client.CookieAgent
        skip_cookie_agent_for(NoCookies)()
        self.assertIs(treq_client.CookieAgent, before)
        self.assertIsNot(before, CookieAgent)

    def test_undo_restores_treq(self) -> None:
        """The undo puts treq's own CookieAgent back; a nested engagement's undo leaves it to the outer."""
        skip_cookie_agent_for(NoCookies)()
        self.assertIsNot(treq_client.CookieAgent, CookieAgent)
        self.undo()
        self.assertIs(treq_client.CookieAgent, CookieAgent)

    @inlineCallbacks
    def test_cookies_still_travel_for_a_real_jar_and_not_for_no_cookies(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        port = reactor.listenTCP(0, Site(CookieEcho()), interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted's Site/ServerFactory generics disagree
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        url = f"http://127.0.0.1:{port.getHost().port}/"  # type: ignore[attr-defined]  # a TCP port's host is an IPv4Address
        seen = {}
        for name, jar in (("jar", CookieJar()), ("none", NoCookies())):
            client = HTTPClient(Agent(reactor, pool=pool), cookiejar=jar)  # type: ignore[arg-type]  # treq takes any CookieJar
            yield (yield client.get(url)).content()
            seen[name] = yield (yield client.get(url)).content()
        self.assertEqual(seen, {"jar": b"session=s1", "none": b"-"})
