"""
SIGHUP: the secrets, re-read without a restart.

A rotation is a change of secrets on a running cluster: ``api_token`` and
``signing_secret`` take several values, and SIGHUP re-reads the settings
from where they came (the INI file, the ``*_file`` secrets, the environment
and command line of the start) and puts the new secrets in force for the
next request; the Redis password is sent at the next reconnection, and an
``ssl:`` listener's certificate and key serve the next handshake.  Nothing
is dropped: open connections keep what they were opened with.  One log line
says what changed, never a value; a setting that is read only at start is
named as such; a mistake keeps what is in force and says why.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from zope.interface import implementer

from socketdock.config.secrets import Secrets
from socketdock.config.settings import Config, ConfigError, secrets_of

__all__ = ["ReloadableTLS", "Reloader", "reload_on_sighup"]

#: Config fields a SIGHUP applies (the rest are read only at start).
_RELOADED = frozenset(
    {
        "api_token",
        "api_token_file",
        "api_tokens",
        "signing_secret",
        "signing_secret_file",
        "signing_secrets",
        "cluster_password_file",
    }
)


class _Captured(Exception):
    pass


class _Capture:
    """A stand-in reactor that keeps the TLS options an ``ssl:`` endpoint would listen with."""

    options: Any = None

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        self.options = contextFactory
        raise _Captured()


def tls_options_for(description: str) -> Any:
    """
    The TLS options an ``ssl:`` endpoint string gives, its files read now:
    Twisted's own parser, so every option it knows is honoured.
    """
    capture = _Capture()
    d = serverFromString(capture, description).listen(None)
    d.addErrback(lambda f: f.trap(_Captured))
    return capture.options


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """
    The TLS context of one ``ssl:`` listener, replaceable while it listens:
    each new handshake asks for the context (as Twisted's TLS wrapper does,
    through ``getContext``); handshakes made already keep theirs.
    """

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self._description = description
        self._options: Any = None

    def getContext(self):
        return self._options.getContext()

    def use(self, options: Any) -> None:
        """The options the listener starts with."""
        self._options = options

    def reload(self) -> bool:
        """
        Read the certificate and key again.

        :returns: whether they changed.
        :raises Exception: unreadable or unusable files (what is in force stays).
        """
        options = tls_options_for(self._description)
        options.getContext()  # a key that does not match the certificate fails here
        changed = _identity(options) != _identity(self._options)
        self._options = options
        return changed

    def reactor(self, net):
        """``net`` with its ``listenSSL`` listening with this context."""
        return _ListenWith(net, self)


def _identity(options: Any) -> tuple:
    certificate = getattr(options, "certificate", None)
    key = getattr(options, "privateKey", None)
    return (
        certificate.digest("sha256") if certificate is not None else None,
        getattr(key, "bits", lambda: None)(),
        repr(getattr(options, "extraCertChain", None)),
    )


class _ListenWith:
    """A reactor whose ``listenSSL`` uses a :class:`ReloadableTLS`; all else is ``net``'s."""

    def __init__(self, net, tls: ReloadableTLS) -> None:
        self._net = net
        self._tls = tls

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        self._tls.use(contextFactory)
        return self._net.listenSSL(port, factory, self._tls, backlog, interface)

    def __getattr__(self, name: str):
        return getattr(self._net, name)


class Reloader:
    """
    Re-reads the settings and applies what can change while running.

    :param load: the settings as they are now, from the sources of the start.
    :param config: the settings in force.
    :param secrets: shared with everything that checks or uses one.
    :param use_password: gives Redis's new password to the cluster link.
    :param tls: the ``ssl:`` listeners.
    """

    _log = Logger()

    def __init__(
        self,
        load: Callable[[], Config],
        config: Config,
        secrets: Secrets,
        use_password: Callable[[str | None], None] | None = None,
        tls: Sequence[ReloadableTLS] = (),
    ) -> None:
        self._load = load
        self._started = config
        self._secrets = secrets
        self._use_password = use_password
        self._tls = list(tls)

    def reload(self) -> list[str]:
        """Re-read, apply, and log one line; returns what changed."""
        try:
            new = self._load()
        except ConfigError as e:
            self._log.error(
                "SIGHUP: settings not reloaded, what is in force stays: {error}", error=str(e)
            )
            return []
        changed = self._secrets.replace(secrets_of(new))
        if "cluster password" in changed and self._use_password is not None:
            self._use_password(self._secrets.cluster_password)
        for tls in self._tls:
            try:
                if tls.reload():
                    changed.append(f"TLS certificate and key of {tls.name}")
            except Exception as e:
                self._log.error(
                    "SIGHUP: the TLS certificate and key of {name} were not reloaded, "
                    "the ones in force stay: {error}",
                    name=tls.name,
                    error=type(e).__name__,
                )
        at_start = _changed_at_start(self._started, new)
        self._log.info(
            "SIGHUP: {changed}{at_start}",
            changed="reloaded " + ", ".join(changed) if changed else "no secret changed",
            at_start="; changed but read only at start (restart to apply): " + ", ".join(at_start)
            if at_start
            else "",
            secrets_changed=changed,
            restart_needed=at_start,
        )
        return changed


def _changed_at_start(old: Config, new: Config) -> list[str]:
    names = []
    for field in attrs.fields(Config):
        if field.name in _RELOADED or field.name == "listen_key":
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if field.name == "cluster" and before is not None and after is not None:
            before, after = attrs.evolve(before, password=None), attrs.evolve(after, password=None)
        if before != after:
            names.append(field.name)
    return names


def reload_on_sighup(reactor, reload: Callable[[], object]) -> None:
    """
    Call ``reload`` in the reactor's thread on each SIGHUP.  Call once the
    reactor runs (twistd installs no SIGHUP handler of its own).
    """

    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, handler)
