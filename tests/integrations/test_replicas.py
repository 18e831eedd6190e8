"""
Two ACA-Py replicas behind two SocketDock instances, as etc/examples/acapy-replicas
configures them (issue 24): the test runs those files, with only their
loopback ports changed to free ones.

- Redis, PostgreSQL (the replicas' one shared Askar wallet), two SocketDock
  instances in cluster mode, HAProxy (wallets' WebSockets over both
  instances; each instance's POSTs to its own replica first, the other as
  backup), ACA-Py replicas a and b with ``socketdock_acapy.transport``;
- a Credo wallet (no endpoint) connects through one instance, so its session
  is on that instance's replica (the *holder*); the sender's socket lands on
  the other instance, so its forwards reach the *other* replica, which holds
  no session of the wallet's and sends by tag: delivered live, with no
  pickup in between (the timings are printed);
- the holder replica is SIGKILLed: the wallet's socket stays up, every
  message sent meanwhile reaches it, and its trust ping is answered through
  the backup;
- the SocketDock instance holding the wallet is SIGKILLed: the other claims
  its connections and sends the disconnect notice ``"recovered": true`` (the
  surviving replica logs it), the wallet reconnects through the other
  instance and gets what is sent next.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.cluster.redisserver import NO_REDIS, REDIS_SERVER
from tests.daemon import TREE, ready, spawn, spawn_socketdock
from tests.integrations.support import (
    ACAPY,
    ACAPY_INTEGRATION,
    HERE,
    NODE,
    Agents,
    PostgresCluster,
    WatchedProcess,
    acapy_missing,
    credo_missing,
    node_environ,
    port_for_an_agent,
    postgres_missing,
    within,
)
from tests.integrations.test_agents import _request

EXAMPLE = TREE / "etc" / "examples" / "acapy-replicas"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
#: The loopback ports the example uses; the test gives each a free one.
EXAMPLE_PORTS = (6379, 5432, 8080, 8081, 8082, 8701, 8702, 8801, 8802, 8021, 8022, 8031, 8032)
_PORT = re.compile(r"(?<![0-9])(" + "|".join(map(str, EXAMPLE_PORTS)) + r")(?![0-9])")

START = 90
STEP = 45
#: How the READMEs say to start replica ``name`` (from the example's directory).
ACAPY_COMMAND = "aca-py start --arg-file acapy-{name}.yml --plugin-config socketdock-acapy.yml"
ACAPY_README = ACAPY_INTEGRATION / "README.rst"


def example_copy(workdir: Path) -> dict[int, int]:
    """Copy the example's files into ``workdir`` with free ports; the example's port -> the copy's."""
    ports = {port: port_for_an_agent() for port in EXAMPLE_PORTS}
    for source in EXAMPLE.iterdir():
        if source.suffix in (".ini", ".cfg", ".conf", ".yml"):
            text = _PORT.sub(lambda m: str(ports[int(m.group(1))]), source.read_text())
            (workdir / source.name).write_text(text)
    return ports


def _missing() -> str | None:
    if HAPROXY is None:
        return "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"
    return acapy_missing() or credo_missing() or postgres_missing() or NO_REDIS


class ACApyReplicasTests(TestCase):
    """The example's two replicas and two instances, a Credo wallet, a sender."""

    skip = _missing()
    timeout = 300

    def spawn_watched(self, name, argv, env, path):
        process = WatchedProcess(name)
        reactor.spawnProcess(process, argv[0], argv, env=env, path=path)
        self.addCleanup(process.stop)
        return process

    def start_replica(self, name, workdir):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKETDOCK_")}
        env.update(HOME=str(workdir), PYTHONPATH=str(ACAPY_INTEGRATION))
        # As the READMEs say to run it.
        argv = [str(ACAPY), *ACAPY_COMMAND.format(name=name).split()[1:]]
        return self.spawn_watched(f"aca-py {name}", argv, env, str(workdir))

    @inlineCallbacks
    def test_two_replicas(self):
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        ports = example_copy(workdir)
        logs: list = []
        started = reactor.seconds()
        timings: list[str] = []

        def save():
            for process in logs:
                (workdir / (process.name.replace(" ", "-") + ".log")).write_bytes(
                    bytes(process.output)
                )
            (workdir / "timings.txt").write_text("\n".join(timings) + "\n")

        self.addCleanup(save)

        def step(d, what, seconds=STEP):
            def note(result):
                timings.append(f"{reactor.seconds() - started:7.2f}s  {what}")
                return result

            return within(reactor, seconds, d, what, *logs).addCallback(note)

        # The shared state: PostgreSQL for the wallet, Redis for the instances.
        postgres = PostgresCluster(self, reactor, ports[5432])
        redis_dir = workdir / "redis"
        redis_dir.mkdir()
        assert REDIS_SERVER is not None
        redis = spawn(
            self,
            reactor,
            "redis-server",
            [REDIS_SERVER, str(workdir / "redis.conf"), "--dir", str(redis_dir)],
        )
        logs.append(redis)
        yield step(
            gatherResults(
                [
                    Deferred.fromCoroutine(postgres.start()),
                    redis.wait_for("Ready to accept connections"),
                ]
            ),
            "PostgreSQL and Redis",
            START,
        )
        assert postgres.process is not None
        logs.append(postgres.process)

        # Two SocketDock instances, from the example's INI files.
        sd = {}
        for n in (1, 2):
            sd[n] = spawn_socketdock(
                self,
                reactor,
                "--config",
                str(workdir / f"socketdock-{n}.ini"),
                name=f"socketdock-{n}",
            )
            logs.append(sd[n])

        async def sd_ready(n):
            # Both listeners bound (the callback API comes second), then /healthz.
            await sd[n].port("api_listen")
            await ready(reactor, sd[n], f"http://127.0.0.1:{ports[8800 + n]}")

        yield step(
            gatherResults([Deferred.fromCoroutine(sd_ready(n)) for n in (1, 2)]),
            "both SocketDock instances",
            START,
        )
        assert HAPROXY is not None
        haproxy = spawn(
            self, reactor, "haproxy", [HAPROXY, "-db", "-f", str(workdir / "haproxy.cfg")]
        )
        logs.append(haproxy)

        # Replica a provisions the shared wallet; then b opens it.
        replicas = {"a": self.start_replica("a", workdir)}
        logs.append(replicas["a"])
        yield step(replicas["a"].wait_for("Listening..."), "ACA-Py replica a", START)
        replicas["b"] = self.start_replica("b", workdir)
        logs.append(replicas["b"])
        yield step(replicas["b"].wait_for("Listening..."), "ACA-Py replica b", START)

        status, body = yield step(
            _request(
                "POST",
                f"http://127.0.0.1:{ports[8031]}/out-of-band/create-invitation?multi_use=true",
                json.dumps(
                    {"handshake_protocols": ["https://didcomm.org/didexchange/1.1"]}
                ).encode(),
                {
                    b"Content-Type": [b"application/json"],
                    b"X-API-Key": [b"change-me-admin-key"],
                },
            ),
            "the mediator's invitation",
        )
        self.assertEqual(status, 200, body)
        invitation_url = json.loads(body)["invitation_url"]

        agents = self.spawn_watched_agents(workdir)
        logs.append(agents)
        yield step(agents.wait_for("EVENT started"), "the Credo script", START)
        agents.command(f"wallet {invitation_url}")
        yield step(agents.wait_for("EVENT mediation-ready"), "mediation granted", START)

        # The wallet's socket was the first through HAProxy: which instance
        # (and so which replica) has it?
        opened = {name: p.count(" opened") for name, p in replicas.items()}
        holders = [name for name, count in opened.items() if count]
        self.assertEqual(len(holders), 1, f"sessions opened per replica: {opened}")
        holder = holders[0]
        other = "b" if holder == "a" else "a"
        holder_sd = 1 if holder == "a" else 2
        other_sd = 3 - holder_sd
        timings.append(f"wallet on socketdock-{holder_sd}, replica {holder}")

        agents.command(f"sender {port_for_an_agent()}")
        yield step(agents.wait_for("EVENT sender-ready"), "the sender", START)
        agents.command("connect")
        yield step(agents.wait_for("EVENT connected"), "the wallet and the sender to connect")
        self.assertTrue(
            replicas[other].count(" opened"),
            "the sender's socket went to the wallet's instance too: no forward reached "
            f"replica {other}",
        )

        # The sender opens a socket per message, which HAProxy spreads over
        # both instances: its forwards reach both replicas.  Those reaching
        # the other replica go by tag; every one is delivered live.
        forwarding = "Forwarding message to connection"
        delays = []
        for n in range(1, 9):
            before = {name: p.count(forwarding) for name, p in replicas.items()}
            by_tag = replicas[other].count("delivered by key")
            times: dict[str, float] = {}

            def at(result, what, times=times):
                times.setdefault(what, reactor.seconds())
                return result

            replicas[other].wait_until(
                lambda before=before: replicas[other].count(forwarding) > before[other]
            ).addCallback(at, "forward")
            received = agents.wait_for(f"EVENT received live-{n}\n").addCallback(at, "received")
            agents.command(f"send live-{n}")
            yield step(received, f"live-{n}")
            if "forward" in times:
                yield step(
                    replicas[other].wait_until(
                        lambda by_tag=by_tag: replicas[other].count("delivered by key") > by_tag
                    ),
                    f"replica {other}'s log of live-{n} delivered by key",
                )
                delays.append(times["received"] - times["forward"])
        self.assertGreaterEqual(len(delays), 2, f"forwards through replica {other}: {len(delays)}")
        self.assertNotIn("EVENT received queued", agents.text())
        line = (
            f"forward reaching replica {other} -> wallet has it: "
            f"min {min(delays) * 1000:.0f} ms, median {statistics.median(delays) * 1000:.0f} ms, "
            f"max {max(delays) * 1000:.0f} ms over {len(delays)}"
        )
        timings.append(line)
        print("\n" + line)

        # The holder replica dies: the socket stays, messages keep coming.
        replicas[holder].signal("KILL")
        for n in range(1, 4):
            agents.command(f"send after-replica-{n}")
        for n in range(1, 4):
            yield step(
                agents.wait_for(f"EVENT received after-replica-{n}\n"),
                f"message {n} after replica {holder} died",
            )
        yield step(replicas[holder].exited, f"replica {holder} to be gone")
        agents.command("ping")
        yield step(
            agents.wait_for("EVENT ping-response"), "a trust ping through the backup replica"
        )
        self.assertNotIn("EVENT closed", agents.text())

        # The instance holding the wallet dies: the other recovers its connections.
        sd[holder_sd].signal("KILL")
        yield step(
            replicas[other].wait_for("recovered)"),
            f"replica {other}'s recovered notice from socketdock-{other_sd}",
        )
        agents.command("send after-instance-1")
        yield step(
            agents.wait_for("EVENT received after-instance-1\n"),
            f"a message after the wallet reconnected through socketdock-{other_sd}",
            START,
        )
        self.assertNotIn("EVENT error", agents.text())
        agents.command("exit")
        yield step(agents.exited, "the Credo script to exit")

    def spawn_watched_agents(self, workdir):
        agents = Agents("credo agents")
        assert NODE is not None  # the test skips without it
        argv = [NODE, str(HERE / "agents.js")]
        reactor.spawnProcess(agents, argv[0], argv, env=node_environ(), path=str(workdir))
        self.addCleanup(agents.stop)
        return agents


class ReadmeTests(TestCase):
    """integrations/acapy/README.rst shows the example's files and command as the story test runs them."""

    def test_blocks_are_the_example_files(self):
        text = ACAPY_README.read_text()
        shown = re.findall(
            r"^\.\. example: etc/examples/acapy-replicas/(\S+)\n\n::\n\n((?:    .*\n|\n)+)",
            text,
            re.MULTILINE,
        )
        self.assertEqual(
            sorted(name for name, _ in shown),
            ["acapy-a.yml", "socketdock-1.ini", "socketdock-acapy.yml"],
        )
        for name, block in shown:
            lines = [line[4:] for line in block.rstrip("\n").split("\n")]
            self.assertEqual("\n".join(lines) + "\n", (EXAMPLE / name).read_text(), name)

    def test_commands_are_the_ones_run(self):
        self.assertIn(ACAPY_COMMAND.format(name="a"), ACAPY_README.read_text())
        example = (EXAMPLE / "README.rst").read_text()
        for name in ("a", "b"):
            self.assertIn(ACAPY_COMMAND.format(name=name), example)
            self.assertIn(
                ACAPY_COMMAND.format(name=name), (EXAMPLE / f"acapy-{name}.yml").read_text()
            )
        for n in (1, 2):
            self.assertIn(f"socketdock --config socketdock-{n}.ini", example)
        self.assertIn("haproxy -db -f haproxy.cfg", example)
        self.assertIn("redis-server redis.conf", example)
