"""
The reconnect storm (issue 26), run by hand:

    python bench/storm.py --n 10000 --trees before=/tmp/main-tree,after=.

Instance A of a two-instance cluster (a private redis-server on loopback, as
``bench/run.py --cluster`` starts) holds N clients; A is killed (SIGKILL) and
every client reconnects to B at once.  Then the same without cluster mode:
one instance stopped (SIGTERM, its drain sends the notices) and restarted,
and the clients reconnect to it (``restart``); and two instances without
cluster, A killed (``failover``: the same storm as ``cluster``, so the two
give the cluster's cost; A's notices are lost, as without a journal).  Relays run pinned to core 0
(``connecturi`` admission on), the clients and backend (one Node process,
``bench/relay-bench/storm.js``) on core 1.  Prints per run: seconds until
every client is admitted again (from the kill or stop), handshakes/s (first
to last admission), p50/p99 handshake latency, the backend's peak concurrent
connect requests, and the storm's connect, disconnect and recovered notices
(connect N; disconnect N, or 0 in failover; recovered N in cluster, else 0).  Each tree given in
``--trees`` (a checkout of SocketDock, e.g. ``git archive`` of another
commit) runs in turn, alternating, so before and after come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import HARNESS, PrivateRedis, install_deps, raise_file_limit, relay_command  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storm(args, node_path: str, tree: str, mode: str, log: str) -> dict:
    redis = PrivateRedis() if mode == "cluster" else None
    extra = f"--cluster {redis.url} --cluster-heartbeat {args.heartbeat}" if redis else ""
    command = relay_command(extra, tree=tree).replace("{relay}", "{relay}")
    config = {
        "mode": mode, "n": args.n, "relayCpu": args.relay_cpu, "backendPort": free_port(),
        "portA": free_port(), "portB": free_port(), "cmdA": command, "cmdB": command,
        "stormConcurrency": args.storm_concurrency, "settleMs": 1500,
        "timeoutMs": args.timeout * 1000, "log": log,
    }
    try:
        out = subprocess.run(
            ["taskset", "-c", str(args.client_cpu), "node",
             os.path.join(HARNESS, "storm.js"), json.dumps(config)],
            env={**os.environ, "NODE_PATH": node_path}, capture_output=True, text=True,
            timeout=args.timeout * 3 + 120)
        # Commands Redis ran, over every handshake of the run (N to A, N to
        # B): what a handshake costs Redis, however busy the machine is.
        stats = redis.info("commandstats") if redis else {}
    finally:
        if redis:
            redis.stop()
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"storm.js failed: {out.stderr[-2000:]}")
    result = json.loads(lines[-1])
    calls = {k[len("cmdstat_"):]: int(v.split(",")[0].split("=")[1])
             for k, v in stats.items() if k.startswith("cmdstat_")}
    calls.pop("info", None)
    result["redisCommandsPerHandshake"] = sum(calls.values()) / (2 * args.n) if redis else None
    result["redisCommands"] = calls
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--trees", default=f"this={os.path.dirname(HERE)}",
                        help="label=path,... checkouts to compare (default: this one)")
    parser.add_argument("--storm-concurrency", type=int, default=50,
                        help="reconnects in flight at once (the rest wait their turn)")
    parser.add_argument("--heartbeat", default="5",
                        help="cluster_heartbeat: B claims A's notices after 3 of them")
    parser.add_argument("--modes", default="restart,failover,cluster")
    parser.add_argument("--timeout", type=int, default=120)
    parser.add_argument("--relay-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--deps", default="/tmp/relay-bench-deps")
    parser.add_argument("--logs", default="/tmp/socketdock-storm")
    args = parser.parse_args()
    os.makedirs(args.logs, exist_ok=True)
    raise_file_limit([args.n])
    node_path = install_deps(args.deps)
    trees = [tuple(t.split("=", 1)) for t in args.trees.split(",")]
    results: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.reps):
        order = trees if rep % 2 == 0 else trees[::-1]
        for label, tree in order:
            for mode in args.modes.split(","):
                r = storm(args, node_path, os.path.abspath(tree), mode,
                          os.path.join(args.logs, f"{label}-{mode}-{rep}"))
                results.setdefault((label, mode), []).append(r)
                print(f"{label:8s} {mode:8s} rep {rep}: all {r['n']} admitted in "
                      f"{r['secondsUntilAllAdmitted']:.2f}s  {r['handshakesPerSec']:.0f} handshakes/s  "
                      f"p50 {r['p50ms']:.0f} ms p99 {r['p99ms']:.0f} ms  peak connects in flight "
                      f"{r['peakConcurrentConnects']}  notices: connect {r['connects']} "
                      f"disconnect {r['disconnects']} recovered {r['recovered']}  "
                      f"{'correct' if r['correct'] else 'WRONG'}  relay CPU until admitted "
                      f"{1000 * r['relayCpuUntilAdmittedSec'] / r['n']:.2f} ms/handshake, "
                      f"in all {r['relayCpuSec']:.1f}s" + (
                          "" if r["redisCommandsPerHandshake"] is None else
                          f"  Redis commands per handshake {r['redisCommandsPerHandshake']:.2f} "
                          f"{r['redisCommands']}"), flush=True)
                print("   ", json.dumps(r),
                      flush=True)
    modes = args.modes.split(",")
    if "cluster" not in modes or "failover" not in modes:
        return
    print("== medians: handshakes/s with cluster on (cluster) / off (failover), the same storm")
    for label, _ in trees:
        on = statistics.median(r["handshakesPerSec"] for r in results[(label, "cluster")])
        off = statistics.median(r["handshakesPerSec"] for r in results[(label, "failover")])
        print(f"{label:8s} cluster off {off:.0f}/s  on {on:.0f}/s  ratio on/off {on / off:.2f}")

if __name__ == "__main__":
    main()
