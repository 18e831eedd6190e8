"""
The real agents for the end-to-end tests: where ``.ci/agents`` installed them
(``.agents/`` at the root of the tree, or ``$SOCKETDOCK_TEST_AGENTS``), why a
test must skip when one is missing, and processes to drive them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout

from tests.daemon import TREE, Process

HERE = Path(__file__).resolve().parent
AGENTS = Path(os.environ.get("SOCKETDOCK_TEST_AGENTS") or TREE / ".agents")
ACAPY = AGENTS / "acapy" / "bin" / "aca-py"
NODE_MODULES = AGENTS / "credo" / "node_modules"
ASKAR_LIB_DIR = AGENTS / "askar" / "aries_askar"
ACAPY_INTEGRATION = TREE / "integrations" / "acapy"
CREDO_INTEGRATION = TREE / "integrations" / "credo"
NODE = shutil.which("node")
NPM = shutil.which("npm")

_HINT = "run .ci/agents to install it"


def acapy_missing() -> str | None:
    """Why ACA-Py cannot run here, or None."""
    if not ACAPY.exists():
        return f"ACA-Py (acapy-agent 1.7.0) is not installed at {ACAPY.parent.parent}: {_HINT}"
    return None


def credo_missing() -> str | None:
    """Why the Credo (Node) agents cannot run here, or None."""
    if NODE is None or NPM is None:
        return "node or npm is not installed"
    if not (NODE_MODULES / "@credo-ts" / "core").is_dir():
        return f"Credo 0.5.19 is not installed in {NODE_MODULES}: {_HINT}"
    if not list((NODE_MODULES / "@2060.io" / "ffi-napi").glob("build/Release/*.node")):
        return "the ffi-napi native addon is not built (npm rebuild): " + _HINT
    if not (ASKAR_LIB_DIR / "libaries_askar.so").exists():
        return f"libaries_askar.so (aries-askar 0.3.2) is not in {ASKAR_LIB_DIR}: {_HINT}"
    return None


def node_environ(
    extra: dict[str, str] | None = None, transport: str | None = None
) -> dict[str, str]:
    """
    Environment for the Credo scripts: their modules and the askar library;
    ``transport``, the node_modules where :func:`install_credo_transport`
    installed integrations/credo, comes first.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
    env["NODE_PATH"] = os.pathsep.join(filter(None, [transport, str(NODE_MODULES)]))
    env["LIB_ARIES_ASKAR_PATH"] = str(ASKAR_LIB_DIR)
    env.update(extra or {})
    return env


async def install_credo_transport(testcase: Any, reactor: Any) -> str:
    """
    ``npm install --install-links integrations/credo`` into a fresh project
    directory, as its README says (offline, and without its peer dependency
    @credo-ts/core, which the tests' Credo provides through NODE_PATH);
    returns that project's node_modules.
    """
    assert NPM is not None  # credo_missing() said so
    project = Path(testcase.mktemp()).resolve()
    project.mkdir(parents=True)
    (project / "package.json").write_text(
        '{"name": "mediator", "version": "1.0.0", "private": true}'
    )
    argv = [
        NPM,
        "install",
        "--install-links",
        "--offline",
        "--legacy-peer-deps",
        "--no-audit",
        "--no-fund",
        str(CREDO_INTEGRATION),
    ]
    process = WatchedProcess("npm install")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
    env["npm_config_cache"] = str(AGENTS / "cache" / "npm")
    reactor.spawnProcess(process, NPM, argv, env=env, path=str(project))
    testcase.addCleanup(process.stop)
    code = await process.exited
    installed = project / "node_modules" / "socketdock-credo" / "index.js"
    if code != (0, None) or not installed.exists():
        raise AssertionError(f"npm install of integrations/credo failed {code}:\n{process.text()}")
    return str(project / "node_modules")


class Agents(Process):
    """
    A process driven by lines on its stdin (tests/integrations/agents.js):
    :meth:`command` writes one, :meth:`wait_until` waits on its output.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._checks: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid  # stdin stays open: it carries commands

    def command(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode("utf-8") + b"\n")

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        for check in list(self._checks):
            if check[0]():
                self._checks.remove(check)
                check[1].callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        checks, self._checks = self._checks, []
        super().processEnded(reason)
        for _, d in checks:
            d.errback(AssertionError(f"{self.name} ended; its output:\n{self.text()[-4000:]}"))

    def wait_until(self, predicate: Callable[[], bool]) -> Deferred[None]:
        """Fire once ``predicate()`` holds, checked whenever output arrives."""
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._checks.append((predicate, d))
        return d


class WatchedProcess(Agents):
    """Any process (ACA-Py) whose output a test waits on with predicates."""

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        self.transport.closeStdin()


def within(
    reactor: Any, seconds: float, d: Deferred[Any], what: str, *logs: Process
) -> Deferred[Any]:
    """
    ``d``, failing after ``seconds`` with a message saying what was awaited
    and the tail of each process's output.
    """
    d.addTimeout(seconds, reactor)

    def explain(failure: Any) -> Any:
        failure.trap(DeferredTimeout)
        tails = "\n".join(f"--- {p.name}:\n{p.text()[-4000:]}" for p in logs)
        raise AssertionError(f"timed out after {seconds}s waiting for {what}\n{tails}")

    return d.addErrback(explain)


def port_for_an_agent() -> int:
    """
    A loopback port for an agent's own listener (ACA-Py's inbound transport
    and admin server, Credo's transport), which take a port number and do not
    report the one they bound.  SocketDock itself listens on port 0 and names
    its port (:func:`tests.daemon.started`); only these programs need a number
    chosen in advance, with the small race that choosing one has.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_program(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


INITDB = _postgres_program("initdb")
POSTGRES = _postgres_program("postgres")


def postgres_missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if INITDB is None or POSTGRES is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root with no postgres user to run PostgreSQL as"
    return None


class PostgresCluster:
    """
    A throwaway PostgreSQL cluster: ``initdb`` in a temporary directory (under
    /tmp, which the postgres user can reach), the server on a loopback port
    with fsync off, run as the postgres user when the tests run as root (the
    server refuses root), stopped and removed in cleanup.
    """

    def __init__(self, testcase: Any, reactor: Any, port: int) -> None:
        self._testcase = testcase
        self._reactor = reactor
        self.port = port
        self.directory = tempfile.mkdtemp(prefix="socketdock-pg-")
        self._ids: dict[str, int] = {}
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            self._ids = {"uid": entry.pw_uid, "gid": entry.pw_gid}
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        testcase.addCleanup(shutil.rmtree, self.directory, True)
        self.process: WatchedProcess | None = None

    def _spawn(self, name: str, argv: list[str]) -> WatchedProcess:
        process = WatchedProcess(name)
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        self._reactor.spawnProcess(
            process, argv[0], argv, env=env, path=self.directory, **self._ids
        )
        self._testcase.addCleanup(process.stop)
        return process

    async def start(self) -> PostgresCluster:
        assert INITDB is not None and POSTGRES is not None  # postgres_missing() said so
        data = os.path.join(self.directory, "data")
        initdb = self._spawn(
            "initdb",
            [INITDB, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        )
        code = await initdb.exited
        if code != (0, None):
            raise AssertionError(f"initdb failed {code}:\n{initdb.text()}")
        self.process = self._spawn(
            "postgres",
            [
                POSTGRES,
                "-D",
                data,
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                self.directory,
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
        )
        self._testcase.addCleanup(self._quit)
        await self.process.wait_for("ready to accept connections")
        return self

    def _quit(self) -> Deferred[Any]:
        """Immediate shutdown (SIGQUIT): the server and its backends end at once."""
        assert self.process is not None
        self.process.signal("QUIT")
        return self.process.exited
