"""
Fan-out by tag (issue 26), run by hand:

    python bench/fanout.py --n 10000 --trees before=/tmp/main-tree,after=. --pushpin

N clients (one Node process, ``bench/relay-bench/fanout.js``, on core 1)
each carry the tag ``all`` and one of 100 group tags (N/100 each).  Senders
post 64-byte messages by tag in a closed loop (the next only once every
carrier received the last): to ``all`` (4 senders) and round robin to the
groups (16 senders), through the instance holding the clients and through
the other instance of a two-instance cluster (via a private Redis, as
``bench/run.py --cluster`` starts).  Relays run pinned to core 0; the relay
CPU is both instances' (Redis, unpinned, is not counted).  With
``--pushpin``, Pushpin (Debian's ``pushpin`` package: condure, proxy and
handler, all pinned to core 0, ``message_rate`` raised to 1,000,000 so its
limit is not what is measured) does the same through its HTTP publish API,
its clients subscribed by GRIP control messages over WebSocket-over-HTTP
(its runner starts its own zurl for the requests to the backend).
Prints per measurement: deliveries/s, relay CPU per delivered frame and
deliveries per relay CPU-second, POST-to-last-receipt p50/p99, and the
harness's CPU use (near 1.0: the harness was the limit, not the relay).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import HARNESS, PrivateRedis, install_deps, raise_file_limit, relay_command  # noqa: E402
from storm import free_port  # noqa: E402


def harness(args, node_path: str, config: dict) -> list[dict]:
    base = {"n": args.n, "relayCpu": args.relay_cpu, "size": 64, "sendersAll": 4,
            "sendersGroups": 16, "warmup": args.warmup, "duration": args.duration}
    out = subprocess.run(
        ["taskset", "-c", str(args.client_cpu), "node", os.path.join(HARNESS, "fanout.js"),
         json.dumps({**base, **config})],
        env={**os.environ, "NODE_PATH": node_path}, capture_output=True, text=True,
        timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not rows:
        raise SystemExit(f"fanout.js failed: {out.stderr[-2000:]}")
    return rows


def socketdock(args, node_path: str, label: str, tree: str) -> list[dict]:
    redis = PrivateRedis()
    backend, a, b = free_port(), free_port(), free_port()
    commands = []
    for port in (a, b):
        command = relay_command(f"--cluster {redis.url} {args.relay_args}", tree=tree)
        commands.append(command.replace("{port}", str(port))
                        .replace("{relay}", f"http://127.0.0.1:{port}")
                        .replace("{backend}", f"http://127.0.0.1:{backend}"))
    try:
        return harness(args, node_path, {
            "target": "socketdock", "label": label, "backendPort": backend,
            "commands": commands, "wsPorts": [a, b], "wsUrl": f"ws://127.0.0.1:{a}/ws",
            "sendPorts": [a, b], "viaNames": {str(a): "holder", str(b): "other"},
            "log": os.path.join(args.logs, label)})
    finally:
        redis.stop()


def pushpin(args, node_path: str) -> list[dict]:
    directory = tempfile.mkdtemp(prefix="socketdock-bench-pushpin-")
    backend, port = free_port(), free_port()
    offset = 1000 + port % 20000  # its ZeroMQ and publish ports move with it
    with open("/etc/pushpin/pushpin.conf") as f:
        lines = f.read().splitlines()
    settings = {"rundir": directory, "logdir": directory, "port_offset": str(offset),
                "http_port": str(port), "client_maxconn": str(args.n + 1000),
                "message_rate": "1000000", "message_hwm": "1000000",
                "routesfile": os.path.join(directory, "routes")}
    # Debian's internal.conf expects a system-wide zurl (/var/run/zurl); the
    # runner starts our own instead, and the proxy is pointed at it.
    settings["services"] = "condure,zurl,pushpin-proxy,pushpin-handler"
    zurl = ("zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\n"
            "zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\n"
            "zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out")
    conf = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        conf.append(f"{key}={settings[key]}" if key in settings and "=" in line else line)
        if line.strip() == "[proxy]":
            conf.append(zurl)
    with open(os.path.join(directory, "pushpin.conf"), "w") as f:
        f.write("\n".join(conf) + "\n")
    with open(os.path.join(directory, "routes"), "w") as f:
        f.write(f"* 127.0.0.1:{backend},over_http\n")
    publish = 5561 + offset
    try:
        return harness(args, node_path, {
            "target": "pushpin", "label": "pushpin", "backendPort": backend,
            "commands": [f"pushpin --config {directory}/pushpin.conf"], "wsPorts": [port],
            "wsUrl": f"ws://127.0.0.1:{port}/ws", "sendPorts": [publish],
            "viaNames": {str(publish): "publish API"}, "log": os.path.join(args.logs, "pushpin")})
    finally:
        _stop_leftovers(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _stop_leftovers(directory: str) -> None:
    """
    Pushpin's runner does not always take condure, zurl and the rest with it
    when it is stopped: end every process whose command line names this run's
    directory (and only those).
    """
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if directory.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def show(row: dict) -> None:
    row = {k: float("nan") if v is None else v for k, v in row.items()}  # JSON's NaN is null
    print(f"{row['label']:8s} {row['tagMode']:6s} via {row['via']:11s} "
          f"{row['deliveriesPerSec']:9.0f} deliveries/s  {row['relayCpuUsPerDelivery']:6.2f} µs relay "
          f"CPU each ({row['deliveriesPerCpuSec']:8.0f}/CPU-s, relay core {row['relayCpuUtil']:.2f} busy)  "
          f"POST to last receipt p50 {row['p50ms']:.1f} ms p99 {row['p99ms']:.1f} ms  "
          f"{row['sends']} sends, {row['failedSends']} failed  harness CPU {row['harnessCpuUtil']:.2f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--trees", default=f"this={os.path.dirname(HERE)}")
    parser.add_argument("--pushpin", action="store_true")
    parser.add_argument("--reps", type=int, default=1, help="runs of each, alternating")
    parser.add_argument("--relay-args", default="", help="more relay options")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--relay-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--deps", default="/tmp/relay-bench-deps")
    parser.add_argument("--logs", default="/tmp/socketdock-fanout")
    args = parser.parse_args()
    if args.n % 100:
        raise SystemExit("--n must be a multiple of 100 (100 group tags)")
    os.makedirs(args.logs, exist_ok=True)
    raise_file_limit([args.n])
    node_path = install_deps(args.deps)
    trees = [tuple(t.split("=", 1)) for t in args.trees.split(",") if t]
    rows: list[dict] = []
    for rep in range(args.reps):
        for label, tree in trees if rep % 2 == 0 else trees[::-1]:
            for row in socketdock(args, node_path, label, os.path.abspath(tree)):
                show(row)
                rows.append(row)
        if args.pushpin:
            for row in pushpin(args, node_path):
                show(row)
                rows.append(row)
                print("   ", json.dumps(row), flush=True)
    print(f"== medians of {args.reps} runs each")
    medians: dict[tuple[str, str, str], dict] = {}
    for key in dict.fromkeys((r["label"], r["tagMode"], r["via"]) for r in rows):
        runs = [r for r in rows if (r["label"], r["tagMode"], r["via"]) == key]
        medians[key] = {k: statistics.median(r[k] for r in runs) for k in (
            "deliveriesPerSec", "relayCpuUsPerDelivery", "deliveriesPerCpuSec", "p50ms", "p99ms",
            "relayCpuUtil", "harnessCpuUtil")}
        show({**runs[0], **medians[key], "sends": sum(r["sends"] for r in runs),
              "failedSends": sum(r["failedSends"] for r in runs)})
    for (label, mode, via), m in medians.items():
        theirs = medians.get(("pushpin", mode, "publish API"))
        if theirs and label != "pushpin":
            print(f"{label:8s} {mode:6s} via {via:11s} deliveries per relay CPU-second: "
                  f"{m['deliveriesPerCpuSec'] / theirs['deliveriesPerCpuSec']:.1f}x Pushpin's")


if __name__ == "__main__":
    main()
