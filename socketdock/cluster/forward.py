"""
``/socket/<id>/...`` for a connection another instance holds: the same
request, made to that instance's callback API (SPEC §8).

The holder is named by its ``externalhostandport``, the base URL the backend
already uses for it, so forwarding needs no channel of its own and keeps the
callback API's answers exactly: a send held during a pending handshake is
answered when it is delivered, 404 when the connection went in between, 503
when its client is not reading.  Requests go out through treq over one
persistent pool, with the cluster's ``api_token`` and the hop marker
(:data:`socketdock.relay.reach.HOP_HEADER`): the receiver answers from its own
connections and never forwards it on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketdock.config.secrets import Secrets
from socketdock.relay.confirm import Gone, Tally, Unconfirmed
from socketdock.relay.reach import HERE_ONLY, HOP_HEADER, InvalidTags, Unreachable
from socketdock.relay.registry import NotLive, OutboundFull
from socketdock.relay.state import encode_state


def _frame_type(is_binary: bool) -> bytes:
    """The Content-Type under which ``send`` makes the same kind of frame (SPEC §4)."""
    return b"application/octet-stream" if is_binary else b"text/plain; charset=utf-8"


class Forwarder:
    """
    Asks the instance holding a connection.

    :param http: a treq ``HTTPClient``.
    :param token: the ``api_token`` every instance of the cluster shares, or
        None; or the :class:`Secrets` in force, whose first token is sent (read
        per request: during a rotation every instance accepts it).
    :param timeout: seconds for one forwarded request; a send held for a
        pending handshake waits as long as the backend may take to admit it.
    """

    _log = Logger()

    def __init__(self, http, reactor, token: str | Secrets | None, timeout: float) -> None:
        self._http = http
        self._reactor = reactor
        if not isinstance(token, Secrets):
            token = Secrets(api_tokens=(token,) if token else ())
        self._secrets = token
        self._timeout = timeout

    def send(self, holder: str, connection_id: str, payload: bytes, is_binary: bool) -> Deferred:
        content_type = _frame_type(is_binary)
        d = self._request(holder, "POST", f"/socket/{connection_id}/send", payload, content_type)
        return d.addCallback(self._outcome, holder)

    def confirm(
        self, holder: str, connection_id: str, payload: bytes, is_binary: bool, timeout: float
    ) -> Deferred:
        """A confirmed send (SPEC §9), waited for as long as the holder may wait."""
        content_type = _frame_type(is_binary)
        path = f"/socket/{connection_id}/send?confirm={timeout!r}"
        d = self._request(
            holder, "POST", path, payload, content_type, max(self._timeout, timeout + 5)
        )
        return d.addCallback(self._outcome, holder)

    def close(self, holder: str, connection_id: str, code: int, reason: str) -> Deferred:
        body = json.dumps({"code": code, "reason": reason}).encode("utf-8")
        d = self._request(
            holder, "POST", f"/socket/{connection_id}/disconnect", body, b"application/json"
        )
        return d.addCallback(self._outcome, holder)

    def describe(self, holder: str, connection_id: str) -> Deferred:
        d = self._request(holder, "GET", f"/socket/{connection_id}", None, None)
        return d.addCallback(self._json, holder)

    def change_tags(
        self, holder: str, connection_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> Deferred:
        body = json.dumps({"add": list(add), "remove": list(remove)}).encode("utf-8")
        d = self._request(
            holder, "POST", f"/socket/{connection_id}/tags", body, b"application/json"
        )
        answer = d.addCallback(self._json, holder)
        return answer.addCallback(lambda answer: tuple(answer["tags"]))

    def set_state(self, holder: str, connection_id: str, state: str) -> Deferred:
        """Replace the state; fires with it as compact JSON text."""
        body = state.encode("utf-8")
        d = self._request(
            holder, "POST", f"/socket/{connection_id}/state", body, b"application/json"
        )
        answer = d.addCallback(self._json, holder)
        return answer.addCallback(lambda answer: encode_state(answer["state"]))

    def tag_confirm(
        self, holder: str, tag: str, payload: bytes, is_binary: bool, timeout: float
    ) -> Deferred:
        """The holder's own part of a confirmed tag send: a :class:`Tally`."""
        content_type = _frame_type(is_binary)
        path = f"/tags/{quote(tag, safe='')}/send?confirm={timeout!r}"
        d = self._request(
            holder, "POST", path, payload, content_type, max(self._timeout, timeout + 5), True
        )

        def tally(answer: tuple[int, bytes]) -> Tally:
            if answer[0] == 404:
                return Tally()
            counted = self._json(answer, holder)
            return Tally(counted["confirmed"], counted["unconfirmed"], counted["gone"])

        return d.addCallback(tally)

    def tag_page(self, holder: str, tag: str, cursor: str | None, limit: int) -> Deferred:
        """One page of the holder's own connections carrying ``tag``."""
        path = f"/tags/{quote(tag, safe='')}/connections?limit={limit}"
        if cursor:
            path += f"&cursor={quote(cursor, safe='')}"
        d = self._request(holder, "GET", path, None, None, None, True)
        return d.addCallback(self._json, holder)

    def _request(
        self,
        holder: str,
        method: str,
        path: str,
        body: bytes | None,
        content_type: bytes | None,
        timeout: float | None = None,
        here_only: bool = False,
    ) -> Deferred[tuple[int, bytes]]:
        tokens = self._secrets.api_tokens
        headers = {HOP_HEADER: [b"1"]}
        if tokens:
            headers[b"Authorization"] = [b"Bearer " + tokens[0]]
        if here_only:
            headers[HERE_ONLY] = [b"here"]
        if content_type is not None:
            headers[b"Content-Type"] = [content_type]
        d = self._http.request(
            method,
            holder + path,
            headers=headers,
            data=body,
            timeout=self._timeout if timeout is None else timeout,
            reactor=self._reactor,
        )
        d.addCallback(
            lambda response: treq.content(response).addCallback(
                lambda content: (response.code, content)
            )
        )
        d.addErrback(self._unreachable, holder)
        return d

    def _unreachable(self, failure: Failure, holder: str):
        self._log.info(
            "cluster: forwarding to {holder} failed: {why}",
            holder=holder,
            why=failure.getErrorMessage(),
        )
        raise Unreachable("the instance holding this connection did not answer; retry later")

    def _outcome(self, answer: tuple[int, bytes], holder: str) -> None:
        code, body = answer
        if code == 200:
            return
        raise self._failure(code, body, holder)

    def _json(self, answer: tuple[int, bytes], holder: str) -> Any:
        code, body = answer
        if code != 200:
            raise self._failure(code, body, holder)
        return json.loads(body)

    def _failure(self, code: int, body: bytes, holder: str) -> Exception:
        line = body.decode("utf-8", "replace").strip()
        if code == 404:
            return NotLive()
        if code == 400:
            return InvalidTags(line)
        if code == 410:
            return Gone()
        if code == 504:
            return Unconfirmed()
        if code == 503 and "not reading" in line:
            return OutboundFull()
        self._log.warn(
            "cluster: {holder} answered a forwarded request with {code} {line}",
            holder=holder,
            code=code,
            line=line[:200],
        )
        return Unreachable(f"the instance holding this connection answered {code}; retry later")
