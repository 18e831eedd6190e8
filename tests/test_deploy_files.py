"""
The deployment files in etc/ stay valid: every sample INI loads, each instance
has its own ports and callback URL and takes HAProxy's PROXY protocol, HAProxy
accepts its config, the systemd unit keeps the settings a relay needs, each
in a section where systemd reads it, and stays sandboxed; the Containerfile
runs the container settings file as a user other than root.
"""

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.endpoints import tcp_address
from socketdock.config.settings import load_config

ETC = Path(__file__).resolve().parent.parent / "etc"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

#: Where systemd reads each key the unit uses (systemd.unit(5), systemd.service(5),
#: systemd.exec(5), systemd.kill(5), systemd.resource-control(5)); a key in any
#: other section is ignored with no more than a log line.
UNIT_SECTIONS = {
    "Unit": {
        "Description",
        "Documentation",
        "After",
        "Before",
        "Wants",
        "Requires",
        "StartLimitIntervalSec",
        "StartLimitBurst",
    },
    "Service": {
        "Type",
        "ExecStart",
        "ExecReload",
        "User",
        "Group",
        "Environment",
        "EnvironmentFile",
        "WorkingDirectory",
        "KillSignal",
        "KillMode",
        "TimeoutStopSec",
        "Restart",
        "RestartSec",
        "LimitNOFILE",
        "StateDirectory",
        "StateDirectoryMode",
        "UMask",
        "NotifyAccess",
        "WatchdogSec",
        # The sandbox (systemd.exec(5)).
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateUsers",
        "PrivateMounts",
        "ProtectHostname",
        "ProtectClock",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "RemoveIPC",
        "KeyringMode",
        "DevicePolicy",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "SystemCallErrorNumber",
    },
    "Install": {"WantedBy", "RequiredBy", "Alias"},
}


#: The most `systemd-analyze security` may rate the unit ("OK" and below).
MOST_EXPOSURE = 4.0


def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read(ETC / "socketdock@.service")
    return unit


class DeployFilesTests(SynchronousTestCase):
    def test_instance_inis_load_and_differ(self):
        """Each ``etc/instance-*.ini`` loads and has its own listen, api_listen, externalhostandport and journal."""
        configs = [load_config({}, {}, str(p)) for p in sorted(ETC.glob("instance-*.ini"))]
        self.assertGreaterEqual(len(configs), 3)
        for key in ("listen", "api_listen", "externalhostandport", "journal"):
            values = [getattr(c, key) for c in configs]
            self.assertEqual(len(set(values)), len(values), key)
        for config in configs:
            self.assertEqual(config.backend, "http")

    def test_haproxy_sends_proxy_to_haproxy_listeners(self):
        """Each instance listens with haproxy: on a port HAProxy sends to with send-proxy."""
        servers = re.findall(
            r"^\s*server \S+ (\S+)(.*)$", (ETC / "haproxy.cfg").read_text(), re.MULTILINE
        )
        sends_proxy = {address for address, rest in servers if "send-proxy" in rest.split()}
        self.assertEqual(len(sends_proxy), len(servers))
        for path in sorted(ETC.glob("instance-*.ini")):
            config = load_config({}, {}, str(path))
            self.assertTrue(config.listen.startswith("haproxy:tcp:"), path.name)
            address = tcp_address(config.listen)
            assert address is not None
            interface, port = address
            self.assertIn(f"{interface}:{port}", sends_proxy, path.name)

    def test_haproxy_config_is_valid(self):
        """haproxy -c accepts etc/haproxy.cfg, which health-checks /readyz and sets a tunnel timeout."""
        if HAPROXY is None:
            raise self.skipTest("haproxy is not installed (apt-get install haproxy)")
        text = (ETC / "haproxy.cfg").read_text()
        self.assertIn("option httpchk GET /readyz", text)
        self.assertIn("timeout tunnel", text)
        result = subprocess.run(
            [HAPROXY, "-c", "-f", str(ETC / "haproxy.cfg")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_systemd_unit(self):
        """The unit runs twistd in the foreground per %i INI, restarts on failure and outwaits the drain."""
        service = read_unit()["Service"]
        self.assertIn(" -n ", service["ExecStart"])
        self.assertIn("/etc/socketdock/%i.ini", service["ExecStart"])
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 65536)
        longest_drain = max(
            load_config({}, {}, str(p)).shutdown_timeout for p in ETC.glob("instance-*.ini")
        )
        self.assertGreater(int(service["TimeoutStopSec"]), longest_drain)

    def test_systemd_unit_notifies(self):
        """Type=notify (socketdock/ops/sdnotify.py): started once listening, with a watchdog."""
        service = read_unit()["Service"]
        self.assertEqual(service["Type"], "notify")
        self.assertEqual(service["NotifyAccess"], "main")
        self.assertGreater(int(service["WatchdogSec"]), 0)

    def test_systemd_unit_sandbox(self):
        """
        The sandbox lets a relay work: TCP and unix sockets, its state directory,
        no capabilities; systemd-analyze security rates it below 4.0.
        """
        service = read_unit()["Service"]
        self.assertEqual(
            set(service["RestrictAddressFamilies"].split()), {"AF_INET", "AF_INET6", "AF_UNIX"}
        )
        self.assertEqual(service["ProtectSystem"], "strict")
        self.assertEqual(service["StateDirectory"], "socketdock")
        self.assertEqual(service["CapabilityBoundingSet"], "")
        self.assertEqual(service["NoNewPrivileges"], "yes")
        if SYSTEMD_ANALYZE is None:
            raise self.skipTest("systemd-analyze is not installed (it comes with systemd)")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        instance = directory / "socketdock@a.service"
        instance.write_bytes((ETC / "socketdock@.service").read_bytes())
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(instance)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=directory,
        )
        output = result.stdout + result.stderr
        if "--offline" in output and "unrecognized" in output:
            raise self.skipTest("this systemd-analyze has no --offline (systemd 250 and later)")
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
        self.assertIsNotNone(found, output)
        assert found is not None
        self.assertLess(float(found.group(1)), MOST_EXPOSURE, output)

    def test_systemd_unit_keys_sit_in_their_sections(self):
        """Every key of the unit is in a section where systemd reads it; the start limit is in [Unit]."""
        unit = read_unit()
        self.assertEqual(set(unit.sections()), set(UNIT_SECTIONS))
        for section in unit.sections():
            for key in unit[section]:
                self.assertIn(key, UNIT_SECTIONS[section], f"{key}= in [{section}]")
        self.assertEqual(unit["Unit"]["StartLimitIntervalSec"], "60")
        self.assertEqual(unit["Unit"]["StartLimitBurst"], "5")

    def test_systemd_analyze_verify(self):
        """systemd-analyze verify finds nothing wrong with instance a but the absent /opt/socketdock."""
        if SYSTEMD_ANALYZE is None:
            raise self.skipTest("systemd-analyze is not installed (it comes with systemd)")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        instance = directory / "socketdock@a.service"
        instance.write_bytes((ETC / "socketdock@.service").read_bytes())
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", str(instance)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=directory,
        )
        complaints = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            # This machine is not a deployment: the unit's install path is absent.
            if line.strip() and "/opt/socketdock/bin/twistd is not executable" not in line
        ]
        self.assertEqual(complaints, [])


class ContainerfileTests(SynchronousTestCase):
    """What a runtime relies on, read from the Containerfile (tests/test_image.py runs it)."""

    def instructions(self) -> dict[str, list[str]]:
        """Each instruction's arguments, continuation lines joined, by instruction."""
        text = (ETC.parent / "Containerfile").read_text()
        text = re.sub(r"\\\n", " ", text)
        found: dict[str, list[str]] = {}
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                word, _, rest = line.strip().partition(" ")
                found.setdefault(word.upper(), []).append(rest.strip())
        return found

    def test_runs_the_container_settings_as_a_user(self):
        """The entrypoint runs twistd -n on the settings file copied from etc/container.ini, not as root."""
        found = self.instructions()
        entrypoint = json.loads(found["ENTRYPOINT"][-1])
        self.assertEqual(entrypoint[1:4], ["-n", "--pidfile=", "socketdock"])
        self.assertEqual(entrypoint[-2], "--config")
        self.assertIn(f"etc/container.ini {entrypoint[-1]}", found["COPY"])
        user = found["USER"][-1].split(":")[0]
        self.assertTrue(user.isdigit() and int(user) != 0, user)
        self.assertEqual(found["STOPSIGNAL"], ["SIGTERM"])
        self.assertIn("/healthz", found["HEALTHCHECK"][-1])
        self.assertTrue(
            any(
                "-c /src/constraints.txt '/src[cluster]'" in " ".join(run.split())
                for run in found["RUN"]
            ),
            found["RUN"],
        )

    def test_container_settings(self):
        """
        etc/container.ini loads: a wildcard bind with the explicit base URL SPEC §1
        wants, and a drain that ends inside a runtime's default 10 s grace.
        """
        config = load_config({}, {}, str(ETC / "container.ini"))
        self.assertEqual(config.listen, "tcp:8765:interface=0.0.0.0")
        self.assertIsNotNone(config.externalhostandport)
        self.assertLessEqual(config.shutdown_timeout, 8)
        # The operator's override by the environment wins over the placeholder.
        env = {"SOCKETDOCK_EXTERNALHOSTANDPORT": "http://10.0.0.5:8765"}
        config = load_config({}, env, str(ETC / "container.ini"))
        self.assertEqual(config.externalhostandport, "http://10.0.0.5:8765")
