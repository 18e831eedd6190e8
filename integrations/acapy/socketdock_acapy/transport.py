"""
The ACA-Py inbound transport for SocketDock.

    aca-py start ... --inbound-transport socketdock_acapy.transport 127.0.0.1 8080

(ACA-Py reads a module name without a dot as one of its own transports, so
the dotted name is needed.)  It listens for SocketDock's POSTs on HOST:PORT
at ``/connect``, ``/message`` and ``/disconnect`` (point SocketDock's
``connecturi``, ``messageuri`` and ``disconnecturi`` there).  Each SocketDock
connection is one ACA-Py inbound session, like one WebSocket on ACA-Py's own
``ws`` transport: what the session has to send goes to the connection's
``meta.send`` URL, and the disconnect notice closes the session, so what was
still waiting for it goes back to ACA-Py (and, with
``--enable-undelivered-queue``, waits for the client's next pickup).

Every POST is answered as soon as the message is parsed and queued for
ACA-Py's dispatcher: replies never ride on the answer.

Settings, from ACA-Py's plugin configuration (``--plugin-config`` YAML with
a ``socketdock:`` section, or ``-o socketdock.<key>=<value>``), else from
the environment variable ``SOCKETDOCK_<KEY>``:

``trusted_urls``
    required: the base URLs of the SocketDock instances replies may go to
    (their ``externalhostandport``), comma-separated (or a YAML list).  A
    POST whose ``meta.send`` is not ``<one of them>/socket/<id>/send`` gets
    400, so nobody who can reach this transport can have replies, and the
    API token with them, sent elsewhere.  They are also where a message for
    a wallet this ACA-Py holds no session of goes: ``POST /tags/<key>/send``
    through the first that answers.
``signing_secret``
    when set, every POST must carry a valid ``X-SocketDock-Signature``
    (SocketDock's ``signing_secret``); others get 401.  Its ``v2``, when
    present, must sign this route.  A signed POST already taken (a replay,
    or SocketDock's retry of one whose answer it lost) is answered 200 and
    does nothing.
``api_token``
    when set, sent as ``Authorization: Bearer <token>`` with every callback
    (SocketDock's ``api_token``).
``send_timeout``
    seconds for one POST to SocketDock (default 10).

Several replicas: each SocketDock connection is tagged (``POST
/socket/<id>/tags``) with the keys its session replies to, as ACA-Py learns
them; a message ACA-Py queues for pickup whose key no session here holds is
sent with ``POST /tags/<key>/send`` (any instance reaches the one holding
it, in cluster mode) and taken off the queue when one answers 200; on 404
(nobody holds it) it stays queued for pickup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Optional
from urllib.parse import quote

from aiohttp import ClientConnectorError, ClientError, ClientSession, ClientTimeout, web

from acapy_agent.messaging.error import MessageParseError
from acapy_agent.transport.error import WireFormatParseError
from acapy_agent.transport.inbound.base import (
    BaseInboundTransport,
    InboundTransportSetupError,
)
from acapy_agent.transport.inbound.session import InboundSession

from .config import SECTION, Settings, read_settings
from .wire import (
    DELIVERED,
    GONE,
    RETRY,
    SIGNATURE_HEADER,
    BadRequest,
    BadSignature,
    Notice,
    SeenSignatures,
    SeqFilter,
    retry_after,
    send_outcome,
    trusted_send_url,
    verify_signature,
)

LOGGER = logging.getLogger(__name__)

#: Content type of a packed DIDComm v1 message sent as bytes (a binary frame).
ENVELOPE_TYPE = "application/didcomm-envelope-enc"
#: Attempts at one callback before the message goes back to ACA-Py.
SEND_ATTEMPTS = 6


class _AlreadyTaken(Exception):
    """A signed POST taken before: answered 200, nothing done."""


class _Connection:
    """One SocketDock connection: its session, send URL and intake filter."""

    def __init__(self, connection_id: str, session: InboundSession, send_url: str):
        self.connection_id = connection_id
        self.session = session
        self.send_url = send_url
        self.seq = SeqFilter()
        self.closing = False
        self.posting = False
        self.sender: Optional[asyncio.Task] = None
        #: The keys this connection is tagged with (its session's reply keys).
        self.keys: set[str] = set()

    @property
    def tags_url(self) -> str:
        """``POST /socket/<id>/tags`` on the instance holding it (from its trusted send URL)."""
        return self.send_url[: -len("/send")] + "/tags"


class SocketDockInboundTransport(BaseInboundTransport):
    """Serves SocketDock's connect/message/disconnect POSTs as ACA-Py sessions."""

    def __init__(self, host: str, port: int, create_session, **kwargs) -> None:
        """Set up; ``host`` and ``port`` are where SocketDock's POSTs arrive."""
        super().__init__("socketdock", create_session, **kwargs)
        self.host = host
        self.port = int(port)
        self.site: Optional[web.BaseSite] = None
        self.runner: Optional[web.AppRunner] = None
        self.client: Optional[ClientSession] = None
        self.connections: dict[str, _Connection] = {}
        #: Which local connection holds each key: one lookup per queued message.
        self.by_key: dict[str, _Connection] = {}
        self.seen = SeenSignatures()
        self._tasks: set[asyncio.Task] = set()
        # The environment now; ACA-Py's plugin configuration, when it has a
        # socketdock section, at start (the root profile is set by then).
        self._apply(read_settings(None, os.environ))

    def _apply(self, settings: Settings) -> None:
        self.trusted_urls = settings.trusted_urls
        self.signing_secret = settings.signing_secret
        self.api_token = settings.api_token
        self.send_timeout = settings.send_timeout
        self._trust_problem = settings.problem

    async def make_application(self) -> web.Application:
        """The aiohttp application with the three backend routes."""
        app = web.Application(client_max_size=max(self.max_message_size, 0) * 2 or 8 << 20)
        app.add_routes(
            [
                web.post("/connect", self._taken_once(self.connect_handler)),
                web.post("/message", self._taken_once(self.message_handler)),
                web.post("/disconnect", self._taken_once(self.disconnect_handler)),
            ]
        )
        return app

    async def start(self) -> None:
        """Listen on host:port."""
        plugin_config = self.root_profile.settings.get("plugin_config") if self.root_profile else None
        if isinstance(plugin_config, dict) and SECTION in plugin_config:
            self._apply(read_settings(plugin_config, os.environ))
        if self._trust_problem is not None:
            raise InboundTransportSetupError(self._trust_problem)
        self.client = ClientSession(timeout=ClientTimeout(total=self.send_timeout))
        self.runner = web.AppRunner(await self.make_application())
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, host=self.host, port=self.port)
        try:
            await self.site.start()
        except OSError as e:
            raise InboundTransportSetupError(
                f"Unable to start the SocketDock transport on {self.host}:{self.port}: {e}"
            ) from e
        self._follow_outbound()
        LOGGER.info(
            "SocketDock transport listening on http://%s:%s (signatures %s, api token %s)",
            self.host,
            self.port,
            "required" if self.signing_secret else "not checked",
            "set" if self.api_token else "not set",
        )

    def _follow_outbound(self) -> None:
        """Log (at info) what became of outbound messages that could not go at once."""
        try:
            from acapy_agent.core.event_bus import EventBus

            bus = self.root_profile.inject_or(EventBus) if self.root_profile else None
        except Exception:
            bus = None
        if bus is not None:
            bus.subscribe(
                re.compile(r"^acapy::outbound-message::(waiting_for_pickup|undeliverable)$"),
                self._outbound_status,
            )

    async def _outbound_status(self, profile, event) -> None:
        status = event.topic.rsplit("::", 1)[-1]
        outbound = event.payload
        LOGGER.info(
            "Outbound message %s (connection %s)",
            "queued for pickup" if status == "waiting_for_pickup" else "undeliverable",
            getattr(outbound, "connection_id", None),
        )
        if status != "waiting_for_pickup" or outbound is None:
            return
        key = _key_of(outbound)
        conn = self.by_key.get(key) if key else None
        LOGGER.info(
            "Queued message's key %s: %s",
            key,
            "held nowhere here"
            if conn is None
            else f"held by SocketDock connection {conn.connection_id}"
            f"{' (busy)' if conn.session.response_buffer else ''}",
        )
        if conn is not None and not _takes(conn.session, outbound):
            # The session holding the key would not take it: ACA-Py offers a
            # session only what answers the return route its client's last
            # message asked for, and that one asked for none (or for another
            # thread). The wallet's socket is still its way in: by tag.
            LOGGER.info(
                "SocketDock connection %s: its session takes no such message now (reply mode %s); "
                "sent by tag",
                conn.connection_id,
                getattr(conn.session, "reply_mode", None),
            )
            if await self._send_by_tag(profile, outbound, key):
                self._unqueue(outbound)
        elif conn is not None:
            # ACA-Py queues a message for a connected client too when that
            # session's one-message buffer is busy (a reply being POSTed) at
            # the moment it routes it. If the buffer came free before the
            # message reached the queue, nothing would offer it until the
            # client's next message: offer it now to the session holding the
            # key (if still busy, its sender offers the queue after the POST).
            if not conn.closing and not conn.session.response_buffer:
                self._more_undelivered(conn.session)
        elif key:
            # No session here holds the key: maybe another replica's does,
            # through some SocketDock instance.
            if await self._send_by_tag(profile, outbound, key):
                self._unqueue(outbound)

    async def stop(self) -> None:
        """Stop listening; close every session (their waiting replies go back to ACA-Py)."""
        for conn in list(self.connections.values()):
            self._close(conn)
        for task in list(self._tasks):
            task.cancel()
        if self.site:
            await self.site.stop()
            self.site = None
        if self.runner:
            await self.runner.cleanup()
            self.runner = None
        if self.client:
            await self.client.close()
            self.client = None

    # Intake

    def _taken_once(self, handler):
        """
        ``handler``, releasing the request's signature unless it answers 2xx:
        SocketDock's retry of a POST that was not taken must get in.
        """

        async def taken_once(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except _AlreadyTaken:
                return web.Response(status=200)
            except BaseException:
                self._release(request)
                raise
            if not 200 <= response.status < 300:
                self._release(request)
            return response

        return taken_once

    def _release(self, request: web.BaseRequest) -> None:
        key = request.get("socketdock_signature")
        if key is not None:
            self.seen.release(key)

    async def _read(self, request: web.BaseRequest, kind: str) -> Notice:
        body = await request.read()
        if self.signing_secret:
            try:
                key = verify_signature(
                    self.signing_secret,
                    request.headers.get(SIGNATURE_HEADER),
                    body,
                    method=request.method,
                    target=request.raw_path,
                )
            except BadSignature as e:
                LOGGER.warning("SocketDock POST %s refused: %s", request.path, e)
                raise web.HTTPUnauthorized(text=f"{e}\n")
            if not self.seen.claim(key):
                LOGGER.info(
                    "SocketDock POST %s: a signed request already taken (a retry or a replay); "
                    "nothing done",
                    request.path,
                )
                raise _AlreadyTaken()
            request["socketdock_signature"] = key
        try:
            return Notice.parse(body, kind)
        except BadRequest as e:
            raise web.HTTPBadRequest(text=f"{e}\n")

    def _check_send(self, notice: Notice) -> None:
        if notice.send is not None and not trusted_send_url(
            notice.send, notice.connection_id, self.trusted_urls
        ):
            LOGGER.warning(
                "SocketDock connection %s: meta.send is not a trusted SocketDock instance; refused",
                notice.connection_id,
            )
            raise web.HTTPBadRequest(
                text="meta.send is not <a SocketDock in SOCKETDOCK_TRUSTED_URLS>/socket/<id>/send\n"
            )

    async def _open(self, notice: Notice, request: web.BaseRequest) -> _Connection:
        self._check_send(notice)
        conn = self.connections.get(notice.connection_id)
        if conn is not None:
            if notice.send:
                conn.send_url = notice.send
            return conn
        if not notice.send:
            raise web.HTTPBadRequest(text="no meta.send\n")
        session = await self.create_session(
            accept_undelivered=True,
            can_respond=True,
            client_info={
                "host": request.host,
                "remote": request.remote,
                "socketdock_connection_id": notice.connection_id,
            },
        )
        conn = self.connections.get(notice.connection_id)
        if conn is not None:  # another POST for it won the race
            session.close()
            return conn
        conn = _Connection(notice.connection_id, session, notice.send)
        self.connections[notice.connection_id] = conn
        conn.sender = asyncio.get_running_loop().create_task(self._sender(conn))
        LOGGER.info("SocketDock connection %s opened", notice.connection_id)
        return conn

    async def connect_handler(self, request: web.BaseRequest) -> web.Response:
        """``connecturi``: open the session now, admit the client."""
        notice = await self._read(request, "connect")
        await self._open(notice, request)
        return web.Response(status=200)

    async def message_handler(self, request: web.BaseRequest) -> web.Response:
        """``messageuri``: hand the message to ACA-Py; answer at once."""
        notice = await self._read(request, "message")
        if notice.message is None:
            raise web.HTTPBadRequest(text="no message\n")
        conn = await self._open(notice, request)
        if not conn.seq.take(notice.seq):
            LOGGER.info(
                "SocketDock connection %s: message %s is a retry of one already taken",
                conn.connection_id,
                notice.seq,
            )
            return web.Response(status=200)  # empty: see message_handler
        try:
            await conn.session.receive(notice.message)
        except (MessageParseError, WireFormatParseError) as e:
            # Final: a retry would not parse either.
            LOGGER.warning("SocketDock connection %s: unreadable message: %s", conn.connection_id, e)
            raise web.HTTPBadRequest(text=f"unreadable message: {e}\n")
        except Exception:
            conn.seq.give_back(notice.seq)  # let SocketDock's retry in
            LOGGER.exception("SocketDock connection %s: message not taken", conn.connection_id)
            raise web.HTTPServiceUnavailable(text="message not taken; retry\n")
        self._learn_keys(conn)
        # An empty body: with SocketDock's inline_reply on, a non-empty 2xx
        # body would be sent to the client as a message.
        return web.Response(status=200)

    async def disconnect_handler(self, request: web.BaseRequest) -> web.Response:
        """``disconnecturi``: close the session; what waits for it goes back to ACA-Py."""
        notice = await self._read(request, "disconnect")
        conn = self.connections.get(notice.connection_id)
        LOGGER.info(
            "SocketDock connection %s closed (code %s, initiator %s%s)",
            notice.connection_id,
            notice.code,
            notice.initiator,
            ", recovered" if notice.recovered else "",
        )
        if conn is not None:
            conn.closing = True
            if not conn.posting:
                self._close(conn)
            # else: the sender closes it once its POST is answered.
        return web.Response(status=200)

    def _close(self, conn: _Connection) -> None:
        if self.connections.get(conn.connection_id) is conn:
            del self.connections[conn.connection_id]
        for key in conn.keys:
            if self.by_key.get(key) is conn:
                del self.by_key[key]
        conn.closing = True
        if not conn.session.closed:
            # InboundSession.close hands a buffered reply back to ACA-Py
            # (to the undelivered queue when the client has no endpoint).
            conn.session.close()

    # Output

    async def _sender(self, conn: _Connection) -> None:
        """Post every reply the session buffers to the connection's send URL."""
        session = conn.session
        try:
            while not conn.closing:
                payload = await session.wait_response()
                if payload is None or conn.closing:  # closed
                    break
                # Take the reply out of ACA-Py's one-message buffer before the
                # POST: a reply ACA-Py routes meanwhile (a mediation grant right
                # behind a DID exchange response) then finds the session free,
                # instead of going to the undelivered queue while its client is
                # connected and waiting for it.
                outbound = session.response_buffer
                session.clear_response()
                conn.posting = True
                try:
                    outcome = await self._post(conn, payload)
                finally:
                    conn.posting = False
                if outcome == DELIVERED:
                    if not conn.closing:
                        self._more_undelivered(session)
                elif outcome == GONE:
                    # Gone from that instance: the wallet may be connected
                    # through another one already (tagged by another replica).
                    key = _key_of(outbound)
                    if key and await self._send_by_tag(session.profile, outbound, key, payload):
                        break
                    LOGGER.info(
                        "SocketDock connection %s: reply not delivered; it goes back to ACA-Py",
                        conn.connection_id,
                    )
                    self._give_back(session, outbound)
                    break
                else:  # refused for good (400, 401, 413): a retry would be too
                    LOGGER.warning(
                        "SocketDock connection %s: reply not delivered (%s); dropped",
                        conn.connection_id,
                        outcome,
                    )
        except asyncio.CancelledError:
            pass
        except Exception:
            LOGGER.exception("SocketDock connection %s: sender failed", conn.connection_id)
        finally:
            self._close(conn)

    async def _post(self, conn: _Connection, payload) -> str:
        if isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, ctype = bytes(payload), ENVELOPE_TYPE
        headers = self._headers(ctype)
        delay = 0.1
        for attempt in range(1, SEND_ATTEMPTS + 1):
            wait = delay
            try:
                async with self.client.post(conn.send_url, data=data, headers=headers) as r:
                    await r.read()
                    outcome = send_outcome(r.status)
                    if outcome != RETRY:
                        if outcome != DELIVERED:
                            LOGGER.warning(
                                "SocketDock connection %s: send answered %s",
                                conn.connection_id,
                                r.status,
                            )
                        return outcome
                    wait = retry_after(r.headers.get("Retry-After"), delay)
            except ClientConnectorError as e:
                # Refused at the TCP level: that instance is gone.
                LOGGER.info("SocketDock connection %s: send failed: %s", conn.connection_id, e)
                return GONE
            except (ClientError, asyncio.TimeoutError, OSError) as e:
                LOGGER.info(
                    "SocketDock connection %s: send attempt %d failed: %r",
                    conn.connection_id,
                    attempt,
                    e,
                )
            if conn.closing or attempt == SEND_ATTEMPTS:
                break
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)
        # Retries used up (or the connection is closing): hand it back to ACA-Py
        # rather than drop it; the client's next message opens a new session.
        return GONE

    def _headers(self, content_type: str) -> dict:
        headers = {"Content-Type": content_type}
        if self.api_token:
            headers["Authorization"] = f"Bearer {self.api_token}"
        return headers

    # Tags

    def _learn_keys(self, conn: _Connection) -> None:
        """Tag the connection with the reply keys its session learned from this message."""
        new = set(getattr(conn.session, "reply_verkeys", None) or ()) - conn.keys
        if not new or conn.closing:
            return
        conn.keys |= new
        for key in new:
            self.by_key[key] = conn
        task = asyncio.get_running_loop().create_task(self._tag(conn, sorted(new)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tag(self, conn: _Connection, keys: list) -> None:
        """``POST /socket/<id>/tags`` (a few tries): other replicas can then reach it by key."""
        body = json.dumps({"add": keys}).encode("utf-8")
        for attempt in range(3):
            if conn.closing or self.client is None:
                return
            try:
                async with self.client.post(
                    conn.tags_url, data=body, headers=self._headers("application/json")
                ) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        LOGGER.info(
                            "SocketDock connection %s tagged with %d key(s)",
                            conn.connection_id,
                            len(keys),
                        )
                        return
                    if send_outcome(r.status) != RETRY:
                        LOGGER.warning(
                            "SocketDock connection %s: tagging answered %s",
                            conn.connection_id,
                            r.status,
                        )
                        return
            except (ClientError, asyncio.TimeoutError, OSError) as e:
                LOGGER.info("SocketDock connection %s: tagging failed: %r", conn.connection_id, e)
            await asyncio.sleep(0.2 * (attempt + 1))

    async def _send_by_tag(self, profile, outbound, key: str, payload=None) -> bool:
        """
        ``POST /tags/<key>/send`` through the first trusted instance that
        answers: True when a connection carrying the key took it (200), False
        when nobody holds it (404) or no instance could be reached.
        """
        if self.client is None:
            return False
        if payload is None:
            try:
                payload = await self._encode(profile, outbound)
            except Exception:
                LOGGER.exception("SocketDock transport: a queued message could not be packed")
                return False
        if isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, ctype = bytes(payload), ENVELOPE_TYPE
        path = f"/tags/{quote(key, safe='')}/send"
        for base in self.trusted_urls:
            url = base.rstrip("/") + path
            try:
                async with self.client.post(url, data=data, headers=self._headers(ctype)) as r:
                    await r.read()
                    outcome = send_outcome(r.status)
            except (ClientError, asyncio.TimeoutError, OSError) as e:
                LOGGER.info("SocketDock send by key through %s failed: %r", base, e)
                continue
            if outcome == DELIVERED:
                LOGGER.info("Outbound message delivered by key through SocketDock %s", base)
                return True
            if outcome == GONE:
                LOGGER.info("Outbound message: no SocketDock connection holds its key; it stays queued")
                return False
            LOGGER.info("SocketDock send by key through %s answered %s", base, r.status)
        return False

    @staticmethod
    async def _encode(profile, outbound):
        """The message as its recipient gets it (a forward's is already packed)."""
        if outbound.enc_payload:
            return outbound.enc_payload
        from acapy_agent.transport.wire_format import BaseWireFormat

        wire_format = profile.inject(BaseWireFormat)
        target = outbound.target
        async with profile.session() as session:
            if target is not None:
                return await wire_format.encode_message(
                    session, outbound.payload, target.recipient_keys, target.routing_keys,
                    target.sender_key,
                )
            return await wire_format.encode_message(
                session, outbound.payload, [outbound.reply_to_verkey], None,
                outbound.reply_from_verkey,
            )

    def _unqueue(self, outbound) -> None:
        """Take a message delivered by key off ACA-Py's undelivered queue."""
        manager = getattr(self._create_session, "__self__", None)
        queue = getattr(manager, "undelivered_queue", None)
        if queue is None:
            return
        keys = set(outbound.target.recipient_keys) if outbound.target else set()
        if outbound.reply_to_verkey:
            keys.add(outbound.reply_to_verkey)
        for key in keys:
            queue.remove_message_for_key(key, outbound)

    def _give_back(self, session: InboundSession, outbound) -> None:
        """
        A reply that could not be delivered goes back to ACA-Py, as a closing
        session's buffered reply does: to another session of its recipient,
        or to the undelivered queue for pickup.
        """
        manager = getattr(self._create_session, "__self__", None)
        return_inbound = getattr(manager, "return_inbound", None)
        if outbound is None or return_inbound is None:
            LOGGER.warning("SocketDock transport: a reply could not be handed back to ACA-Py")
            return
        try:
            return_inbound(session.profile, outbound)
        except Exception:
            LOGGER.exception("SocketDock transport: handing a reply back to ACA-Py failed")

    def _more_undelivered(self, session: InboundSession) -> None:
        """
        After a delivery, offer the session the next message ACA-Py queued for
        its keys (ACA-Py offers one per inbound message, and a session buffers
        one reply at a time, so a backlog would otherwise wait for the
        client's next message).
        """
        manager = getattr(self._create_session, "__self__", None)
        process = getattr(manager, "process_undelivered", None)
        if process is not None and not session.closed:
            try:
                process(session)
            except Exception:
                LOGGER.exception("SocketDock transport: offering queued messages failed")


def _takes(session, outbound) -> bool:
    """Whether ACA-Py would give ``session`` this message (its return-route rules)."""
    select = getattr(session, "select_outbound", None)
    return True if select is None else bool(select(outbound))


def _key_of(outbound) -> Optional[str]:
    """The recipient key ACA-Py queues a message under (a forward's: its ``reply_to_verkey``)."""
    if getattr(outbound, "reply_to_verkey", None):
        return outbound.reply_to_verkey
    target = getattr(outbound, "target", None)
    if target is not None and target.recipient_keys:
        return target.recipient_keys[0]
    return None
