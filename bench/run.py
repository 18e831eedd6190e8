"""
Benchmark SocketDock on this machine: one command, loopback only.

    python bench/run.py                       # round trips, burst, idle, edge cases
    python bench/run.py --reps 3 --idle-n 2000,10000 --echo

Starts SocketDock (``twistd socketdock`` from this checkout, http backend,
``connecturi`` admission on) pinned to one core and drives it from a separate
Node.js process pinned to another (``bench/relay-bench/bench.js``: the
WebSocket clients and a fast keep-alive backend that answers every message by
POSTing it to ``send``).  Prints round trips/s, latency percentiles, relay
CPU per round trip, memory per idle connection, handshakes/s and whether every
reply came back exactly once and in order.  Idle connections come from
127.0.0.1, 127.0.0.2, ... (one address per 20,000), and the open-file limit is
raised to the hard limit first, so ``--idle-n 50000`` works wherever that limit
allows it.  ``--inline`` adds a run with
``inline_reply`` on, the backend answering in its response body (a mode this
copy of the reference harness adds).  ``--journal`` instead compares
handshakes/s (the idle test) without and with a ``journal`` file, the two
alternating ``--reps`` times in one run (``--open-concurrency 1`` turns the
rate into one handshake's latency).  ``--cluster`` measures what cluster
mode costs (``python bench/run.py --cluster --reps 3 --idle-n 10000``): it
starts a private redis-server on loopback (temporary directory, no
persistence) and alternates relays without and with ``cluster`` on it:
round trips (rt), then handshakes/s and memory per idle connection with
``connecturi`` admission on and off, and Redis's own memory per idle
connection (``INFO memory`` used_memory while they are all open, less
before, over N).  ``--echo`` adds the floor: an
Autobahn/Twisted echo server with no HTTP at all, on the same machine.
``--tuning both`` measures round trips with ``tuning = auto`` (the tuned
stack) and ``tuning = off`` (plain Twisted/treq/Autobahn), alternating A B B A
... one repetition each, and prints the ratio of their medians: what tuning
buys, measured in one run.  With ``--sets locked=PY,newest=PY`` (each a
Python whose site-packages hold one library set, e.g. a virtualenv made with
``pip install -c constraints.txt .`` and one with a plain ``pip install .``)
it runs ``auto`` on every set and ``off`` on the first, round robin, and
first prints each set's ``tuning:`` start-up line (which pieces run).

Needs ``node`` and ``npm`` (``ws`` is installed once under ``--deps``) and
``taskset`` (util-linux).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "relay-bench")
ROOT = os.path.dirname(HERE)

sys.path.insert(0, ROOT)

from socketdock.ops.filelimit import raise_open_file_limit  # noqa: E402


def relay_command(extra: str, tree: str = ROOT, admission: bool = True,
                  python: str = sys.executable) -> str:
    """
    The relay as the harness starts it: ``tree``'s code run by ``python``
    (whose libraries it uses), settings on the command line; ``admission``
    False leaves ``connecturi`` out.
    """
    # (``python -m twisted.scripts.twistd`` does nothing: the module has no main)
    twistd = f"{shlex.quote(python)} -c 'from twisted.scripts.twistd import run; run()'"
    connect = "--connecturi {backend}/connect " if admission else ""
    return (
        f"env PYTHONPATH={shlex.quote(tree)} {twistd} -n --pidfile= socketdock "
        "--bindip 127.0.0.1 --bindport {port} --backend http --externalhostandport {relay} "
        "--messageuri {backend}/message " + connect +
        "--disconnecturi {backend}/disconnect --ping-interval 0 " + extra
    ).strip()


def install_deps(deps: str) -> str:
    """``npm ci`` the harness's one dependency (ws) once; returns NODE_PATH."""
    modules = os.path.join(deps, "node_modules")
    if not os.path.isdir(os.path.join(modules, "ws")):
        os.makedirs(deps, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(HARNESS, name), deps)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=deps, check=True,
                       stdout=subprocess.DEVNULL)
    return modules


#: Connections opened from one 127.0.0.x source address: each has about
#: 28,000 ephemeral ports, some still in TIME_WAIT from the previous repetition.
PER_SOURCE = 20000
#: File descriptors beyond the idle connections themselves: the relay's pooled
#: backend connections, the harness's backend side of them, logs, epoll.
FD_MARGIN = 1000


def sources_for(idle_counts: list[int]) -> int:
    """Source addresses the idle test needs so that no one runs out of ports."""
    return max(1, -(-max(idle_counts, default=0) // PER_SOURCE))


def raise_file_limit(idle_counts: list[int]) -> "str | None":
    """
    Raise this process's open-file limit (which the relay and the harness
    inherit) as far as the hard limit allows, as the daemon does for itself;
    a one-line complaint if that is still too few for the largest idle count.
    """
    _, limit = raise_open_file_limit()
    largest = max(idle_counts, default=0)
    needed = largest + FD_MARGIN
    if limit != resource.RLIM_INFINITY and limit < needed:
        return (f"--idle-n {largest} needs about {needed} open files per process, "
                f"but the limit here is {limit}: raise the hard limit (ulimit -Hn as "
                "root, LimitNOFILE=, docker --ulimit nofile=) or ask for fewer")
    return None


def harness(args, node_path: str, label: str, mode: str, relay_cmd: str, tests: str,
            out: str, port: int, backend_reply: str = "send", extra: tuple = ()) -> dict:
    """One harness run; returns its JSON document."""
    cmd = [
        "taskset", "-c", args.client_cpu, "node", os.path.join(HARNESS, "bench.js"),
        "--label", label, "--mode", mode, "--relay-cmd", relay_cmd, "--relay-cwd", HARNESS,
        "--port", str(port), "--backend-port", str(port + 1), "--relay-cpu", args.relay_cpu,
        "--tests", tests, "--reps", str(args.reps), "--idle-n", args.idle_n,
        "--conns", str(args.conns), "--duration", str(args.duration),
        "--quiet-wait", str(args.quiet_wait), "--out", out, "--backend-reply", backend_reply,
        "--sources", str(args.sources), "--open-concurrency", str(args.open_concurrency),
        *extra,
    ]
    env = dict(os.environ, NODE_PATH=node_path)
    log = out + ".log"
    with open(log, "w") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True,
                       timeout=45 * 60)
    with open(out) as f:
        return json.load(f)


def report(label: str, doc: dict) -> None:
    """The figures a user asks for, medians over the repetitions."""
    s = doc["summary"]
    print(f"== {label}")
    rt = s.get("rt")
    if rt:
        med = {k: v["median"] for k, v in rt.items() if isinstance(v, dict)}
        print(f"  round trips/s        {med['msgsPerSec']:10.0f}   ({args_conns(doc)} clients, closed loop)")
        print(f"  latency p50 / p99    {med['latP50ms']:7.1f} ms / {med['latP99ms']:.1f} ms")
        print(f"  relay CPU per rt     {med['relayCpuSecPer1000'] * 1000:10.0f} us"
              f"   (relay core busy {med['relayCpuUtil']:.0%}, harness core {med['clientCpuUtil']:.0%})")
        print(f"  every reply, once    {'yes' if rt['allCorrect'] else 'NO'}")
    for key, idle in s.items():
        if key.startswith("idle_"):
            n = int(key[5:])
            rates = [n / t for t in idle["openSec"] if t]
            hs = sorted(rates)[len(rates) // 2] if rates else float("nan")
            print(f"  idle x{n:<6d} RSS/conn {idle['rssPerConnKb']['median']:7.1f} KiB"
                  f"   handshakes/s {hs:7.0f}   notices ok {'yes' if idle['allOk'] else 'NO'}")
    if "burst" in s:
        print(f"  burst exactly once, in order: {'yes' if s['burst']['allCorrect'] else 'NO'}")
    for r in doc["results"]:
        if r.get("test") == "edge":
            cases = r.get("cases", {})
            summary = ", ".join(
                f"{name}: {len(c.get('replies', []))} reply"
                + (f", close {c['close']['code']}" if c.get("close") and c["close"]["code"] != 1000 else "")
                for name, c in cases.items())
            print(f"  edge cases           {summary}; tracebacks in log: {r.get('relayTracebacks')}")
    noisy = [r["otherBusyPerCore"] for r in doc["results"] if r.get("otherBusyPerCore")]
    if any(max(x) > 0.1 for x in noisy):
        print(f"  note: other load shared the machine during rt (busy per core {noisy}): figures are noisy")


def handshake_rates(doc: dict) -> list[float]:
    """Handshakes/s of each idle run in ``doc``."""
    return [r["n"] / r["openSec"] for r in doc["results"]
            if r.get("test") == "idle" and r.get("openSec") and r.get("ok")]


def compare_journal(args, node_path: str) -> None:
    """
    The idle test without and with a journal, alternating (off, on, off, on,
    ...) so that other load on the machine falls on both alike.
    """
    rates: dict[str, list[float]] = {"off": [], "on": []}
    once = argparse.Namespace(**{**vars(args), "reps": 1})
    for rep in range(args.reps):
        for label in ("off", "on"):
            extra = args.relay_args
            if label == "on":
                directory = tempfile.mkdtemp(prefix="socketdock-bench-journal-")
                extra += " --journal " + shlex.quote(os.path.join(directory, "journal.sqlite"))
            out = os.path.join(args.out, f"journal-{label}-{rep}.json")
            doc = harness(once, node_path, f"journal-{label}", "relay",
                          relay_command(extra, args.tree), "idle", out, args.port)
            got = handshake_rates(doc)
            rates[label] += got
            print(f"  rep {rep} journal {label:3s}  handshakes/s "
                  + " ".join(f"{r:7.0f}" for r in got), flush=True)
    med = {k: sorted(v)[len(v) // 2] if v else float("nan") for k, v in rates.items()}
    print(f"== handshakes/s, idle x{args.idle_n}, {args.open_concurrency} opening at a time "
          f"(medians of {args.reps}): journal off {med['off']:.0f}, on {med['on']:.0f} "
          f"({med['on'] / med['off'] - 1:+.1%}); per handshake at this concurrency "
          f"{args.open_concurrency / med['off'] * 1e3:.2f} ms off, "
          f"{args.open_concurrency / med['on'] * 1e3:.2f} ms on")


def args_conns(doc: dict) -> int:
    return doc["meta"]["opts"]["conns"]


#: (label, key in the rt summary, scale, unit)
RT_FIGURES = (("relay CPU/rt", "relayCpuSecPer1000", 1000, "us"),
              ("rt/s", "msgsPerSec", 1, ""),
              ("p50", "latP50ms", 1, "ms"),
              ("p99", "latP99ms", 1, "ms"))


def _library_sets(text: str) -> list[tuple[str, str]]:
    """``--sets locked=PY,newest=PY`` as (name, python); this Python alone by default."""
    if not text:
        return [("this", sys.executable)]
    return [tuple(item.split("=", 1)) for item in text.split(",")]  # type: ignore[misc]


def _tuning_line(python: str, tree: str) -> str:
    """The start-up line ``python`` would log for ``tuning = auto`` on ``tree``."""
    code = "from socketdock.tuning import choose_stack; print(choose_stack('auto').summary())"
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[-1]


def compare_tuning(args, node_path: str) -> None:
    """
    Round trips with tuning auto on each library set of ``--sets`` and off
    on the first, round robin, one repetition per run; medians and their
    ratio to off.
    """
    one = argparse.Namespace(**{**vars(args), "reps": 1})
    sets = _library_sets(args.sets)
    for name, python in sets:
        print(f"  {name}: {_tuning_line(python, args.tree)}", flush=True)
    runs_of = [(f"{name} auto", python, "auto") for name, python in sets]
    runs_of.append((f"{sets[0][0]} off", sets[0][1], "off"))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in runs_of}
    for rep in range(args.reps):
        order = runs_of if rep % 2 == 0 else runs_of[::-1]
        for label, python, tuning in order:
            slug = label.replace(" ", "-")
            doc = harness(one, node_path, slug, "relay",
                          relay_command(f"{args.relay_args} --tuning {tuning}", args.tree,
                                        python=python), "rt",
                          os.path.join(args.out, f"tuning-{slug}-{rep}.json"), args.port + 30)
            rt = doc["summary"]["rt"]
            runs[label].append(rt)
            shown = "  ".join(f"{fig} {rt[key]['median'] * scale:.1f}{unit}"
                              for fig, key, scale, unit in RT_FIGURES)
            print(f"  {label:14s} rep {rep}: {shown}"
                  f"{'' if rt['allCorrect'] else '  REPLIES WRONG'}", flush=True)
    off = runs_of[-1][0]
    print(f"== tuning: {', '.join(runs)} ({args.reps} runs each, round robin, medians;"
          f" ratio to {off})")
    for fig, key, scale, unit in RT_FIGURES:
        med = {t: statistics.median(r[key]["median"] for r in rs) * scale for t, rs in runs.items()}
        shown = "  ".join(f"{t} {m:8.1f}{unit:2s} ({m / med[off]:.2f})" for t, m in med.items())
        print(f"  {fig:13s} {shown}")


class PrivateRedis:
    """
    A redis-server of our own on a free loopback port, in a temporary
    directory, with no persistence; :meth:`info` asks it over a plain socket.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="socketdock-bench-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise SystemExit("bench/run.py: redis-server did not start")
        # what it logs later is read and dropped, so the pipe never fills
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self, *words: str) -> bytes:
        """One command's reply (a bulk string or integer), raw."""
        request = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(request.encode())
            reply = b""
            while True:
                reply += s.recv(65536)
                head, _, rest = reply.partition(b"\r\n")
                if head[:1] in (b":", b"+", b"-") and _:
                    return head[1:]
                if head[:1] == b"$" and _ and len(rest) >= int(head[1:]) + 2:
                    return rest[:int(head[1:])]

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisSampler(threading.Thread):
    """
    Samples Redis's used_memory and how many connections the cluster has
    recorded as live (``HLEN`` of the ``where`` hash) every 0.2 s while an
    idle run goes on, bounded by ``limit`` seconds.
    """

    def __init__(self, redis: PrivateRedis, limit: float = 40 * 60) -> None:
        super().__init__(daemon=True)
        self.redis = redis
        self.limit = limit
        self.samples: list[tuple[int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.limit
        while not self.done.is_set() and time.monotonic() < end:
            used = int(self.redis.info("memory")["used_memory"])
            live = int(self.redis.command("HLEN", "socketdock:0:where"))
            self.samples.append((used, live))
            self.done.wait(0.2)

    def per_connection(self, n: int) -> "float | None":
        """
        Bytes per connection: the median used_memory while all ``n`` were
        recorded, less the last sample before any of them was, over n.
        """
        if not self.samples:
            return None
        floor = min(live for _, live in self.samples)
        loaded = [used for used, live in self.samples if live >= floor + n]
        if not loaded:
            return None
        first = next(i for i, (_, live) in enumerate(self.samples) if live >= floor + n)
        before = [used for used, live in self.samples[:first] if live == floor]
        if not before:
            return None
        return (statistics.median(loaded) - before[-1]) / n


def other_load(doc: dict) -> float:
    """The most any core was kept busy by other processes during the run."""
    return max((x for r in doc["results"] for x in (r.get("otherBusyPerCore") or [0.0])),
               default=0.0)


def compare_cluster(args, node_path: str) -> None:
    """
    Without and with ``cluster`` (a private Redis), alternating A B B A ... one
    repetition per relay run: round trips, then the idle test with
    ``connecturi`` admission on and off.
    """
    redis = PrivateRedis()
    print(f"private redis-server {redis.info('server').get('redis_version')} on "
          f"{redis.url}, no persistence", flush=True)
    one = argparse.Namespace(**{**vars(args), "reps": 1})
    try:
        rts: dict[str, list[dict]] = {"off": [], "on": []}
        for rep in range(args.reps):
            for cluster in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                extra = args.relay_args + (f" --cluster {redis.url}" if cluster == "on" else "")
                doc = harness(one, node_path, f"cluster-{cluster}", "relay",
                              relay_command(extra, args.tree), "rt",
                              os.path.join(args.out, f"cluster-rt-{cluster}-{rep}.json"),
                              args.port + 40)
                rt = doc["summary"]["rt"]
                rts[cluster].append(rt)
                shown = "  ".join(f"{label} {rt[key]['median'] * scale:.1f}{unit}"
                                  for label, key, scale, unit in RT_FIGURES)
                print(f"  rt cluster={cluster:3s} rep {rep}: {shown}  other load "
                      f"{other_load(doc):.0%}{'' if rt['allCorrect'] else '  REPLIES WRONG'}",
                      flush=True)
        idle: dict[tuple[str, str], list[dict]] = {}
        n = max(int(x) for x in args.idle_n.split(","))
        for rep in range(args.reps):
            for admission in ("on", "off"):
                for cluster in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                    extra = args.relay_args + (f" --cluster {redis.url}" if cluster == "on" else "")
                    # without connecturi no connect notices come: wait for them briefly
                    notify = () if admission == "on" else ("--notify-timeout", "5")
                    redis.command("FLUSHDB")  # what an earlier relay left, if anything
                    sampler = RedisSampler(redis)
                    sampler.start()
                    try:
                        doc = harness(one, node_path, f"cluster-{cluster}", "relay",
                                      relay_command(extra, args.tree, admission == "on"), "idle",
                                      os.path.join(args.out, f"cluster-idle-{admission}-{cluster}-{rep}.json"),
                                      args.port + 50, extra=notify)
                    finally:
                        sampler.done.set()
                        sampler.join()
                    (r,) = [r for r in doc["results"] if r.get("test") == "idle" and r["n"] == n]
                    held = r.get("opened") == n and r.get("stillOpenAfterHold") == n
                    # a notice retried after a timeout arrives twice (at least once):
                    # every id once is what counts
                    notices = (r.get("disconnectUniqueIds") == n and
                               (admission == "off" or r.get("connectUniqueIds") == n))
                    figures = {
                        "hs": n / r["openSec"] if held and r.get("openSec") else float("nan"),
                        # from the first handshake to the end of the hold (idle: nothing)
                        "cpu": r["cpuSecToOpen"] / n * 1e3 if held else float("nan"),
                        "rss": r["rssPerConnKb"] if held else float("nan"),
                        "redis": sampler.per_connection(n) if cluster == "on" else None,
                        "ok": held and notices,
                        "again": (r.get("disconnectNotifs") or 0) - (r.get("disconnectUniqueIds") or 0),
                    }
                    idle.setdefault((admission, cluster), []).append(figures)
                    redis_shown = ("" if figures["redis"] is None
                                   else f"  Redis {figures['redis']:.0f} B/conn")
                    # (the harness measures other load only during rt; here, just before)
                    before = (r.get("preRun") or {}).get("preLoadCpuPerSec")
                    again = (f"  {figures['again']} disconnect notices retried and delivered twice"
                             if figures["again"] else "")
                    print(f"  idle x{n} admission={admission:3s} cluster={cluster:3s} rep {rep}: "
                          f"handshakes/s {figures['hs']:6.0f}  relay CPU/handshake "
                          f"{figures['cpu']:.2f} ms  RSS/conn {figures['rss']:5.1f} KiB"
                          f"{redis_shown}  machine busy just before "
                          f"{'?' if before is None else format(before, '.2f')} cores{again}"
                          f"{'' if figures['ok'] else '  NOT ALL HELD / NOTICES MISSING'}",
                          flush=True)
    finally:
        redis.stop()
    print(f"== cluster off vs on ({args.reps} alternating runs each, medians)")
    for label, key, scale, unit in RT_FIGURES:
        med = {c: statistics.median(r[key]["median"] for r in rs) * scale for c, rs in rts.items()}
        print(f"  rt {label:13s} off {med['off']:9.1f}{unit:2s}  on {med['on']:9.1f}{unit:2s}"
              f"  on/off {med['on'] / med['off']:.2f}")
    for admission in ("on", "off"):
        for cluster in ("off", "on"):
            runs = idle[(admission, cluster)]
            hs = statistics.median(f["hs"] for f in runs)
            cpu = statistics.median(f["cpu"] for f in runs)
            rss = statistics.median(f["rss"] for f in runs)
            line = (f"  idle x{n} admission {admission:3s} cluster {cluster:3s}: "
                    f"handshakes/s {hs:6.0f}  relay CPU/handshake {cpu:.2f} ms  "
                    f"RSS/conn {rss:5.1f} KiB")
            redis_bytes = [f["redis"] for f in runs if f["redis"] is not None]
            if redis_bytes:
                line += f"  Redis used_memory/conn {statistics.median(redis_bytes):.0f} B"
            print(line)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tests", default="rt,burst,idle,edge")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--duration", type=int, default=10, help="seconds measured per rt run")
    p.add_argument("--idle-n", default="2000", help="idle connection counts, comma-separated")
    p.add_argument("--sources", type=int, default=0,
                   help="127.0.0.x source addresses to open idle connections from "
                        f"(default: one per {PER_SOURCE:,} connections)")
    p.add_argument("--relay-args", default="", help="extra socketdock options, e.g. '--queue-limit 64'")
    p.add_argument("--echo", action="store_true", help="also measure the Autobahn echo floor")
    p.add_argument("--sets", default="",
                   help="with --tuning both: NAME=PYTHON,... library sets to run auto on"
                   " (each a Python whose site-packages hold one set); off runs on the first")
    p.add_argument("--tuning", choices=["auto", "off", "both"], default="auto",
                   help="the relay's tuning setting; both: compare auto and off on round trips only")
    p.add_argument("--inline", action="store_true",
                   help="also measure inline_reply: the backend answers each message "
                        "in its response body instead of POSTing to send")
    p.add_argument("--journal", action="store_true",
                   help="only compare handshakes/s (idle test) without and with a journal file")
    p.add_argument("--cluster", action="store_true",
                   help="only compare cluster off and on (a private redis-server): round trips, "
                        "then handshakes/s, RSS and Redis memory per idle connection with "
                        "connecturi admission on and off")
    p.add_argument("--open-concurrency", type=int, default=100,
                   help="handshakes the idle test keeps under way at once")
    p.add_argument("--relay-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--quiet-wait", type=int, default=30,
                   help="seconds to wait for the machine to go quiet before each test")
    p.add_argument("--deps", default=os.path.join(tempfile.gettempdir(), "socketdock-bench-deps"))
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "socketdock-bench"))
    p.add_argument("--tree", default=ROOT,
                   help="source tree whose socketdock the relay runs (default: this checkout); "
                        "bench/ab.py uses it to compare builds")
    args = p.parse_args(argv)
    idle_counts = [int(n) for n in args.idle_n.split(",") if n.strip()]
    args.sources = args.sources or sources_for(idle_counts)
    if "idle" in args.tests.split(","):
        complaint = raise_file_limit(idle_counts)
        if complaint:
            print(f"bench/run.py: {complaint}", file=sys.stderr)
            return 2
    for tool in ("node", "npm", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/run.py needs {tool!r} on PATH", file=sys.stderr)
            return 2
    node_path = install_deps(args.deps)
    os.makedirs(args.out, exist_ok=True)
    if args.journal:
        compare_journal(args, node_path)
        return 0
    if args.cluster:
        compare_cluster(args, node_path)
        print(f"full results: {args.out}")
        return 0
    if args.tuning == "both":
        compare_tuning(args, node_path)
        print(f"full results: {args.out}")
        return 0
    if args.tuning != "auto":  # (older trees, which bench/ab.py runs, know no --tuning)
        args.relay_args = f"{args.relay_args} --tuning {args.tuning}".strip()
    doc = harness(args, node_path, "socketdock", "relay", relay_command(args.relay_args, args.tree),
                  args.tests, os.path.join(args.out, "socketdock.json"), args.port)
    report("SocketDock (http backend, connecturi admission, send callbacks)", doc)
    if args.inline:
        tests = ",".join(t for t in args.tests.split(",") if t in ("rt", "burst")) or "rt"
        doc = harness(args, node_path, "inline", "relay",
                      relay_command(args.relay_args + " --inline-reply true", args.tree), tests,
                      os.path.join(args.out, "inline.json"), args.port + 20, "inline")
        report("SocketDock (http backend, inline_reply: replies in the response body)", doc)
    if args.echo:
        floor = f"{shlex.quote(sys.executable)} floor_echo.py {{port}}"
        tests = ",".join(t for t in args.tests.split(",") if t in ("rt", "idle")) or "rt"
        doc = harness(args, node_path, "echo", "echo", floor, tests,
                      os.path.join(args.out, "echo.json"), args.port + 10)
        report("Autobahn/Twisted echo floor (no HTTP)", doc)
    print(f"full results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
