"""
Compare this checkout with another revision on a noisy machine: ABBA blocks.

    python bench/ab.py BASE [--blocks 4] [--inline] [--handshakes 2000] [--duration 10]
    python bench/ab.py 8cf848c --this 1784dfd     # two revisions, neither checked out


This VM's speed drifts by 10-20% over minutes, more than most single changes
are worth, so one run of each build says little.  This script checks BASE
(any git revision) out into a temporary worktree and runs ``bench/run.py
--tests rt`` from this checkout against the two relays in the order A B B A,
``--blocks`` times, so slow drift falls on both alike.  It prints every run,
then for each figure the median of each build and how many blocks the
checkout won; a change is only worth believing if it wins nearly every block.
Each run also shows how busy other processes kept the busiest core (the
harness measures it); when some runs were disturbed, the medians of the
undisturbed ones follow, since one neighbour's burst can take a fifth of a
core and make one build look worse than it is.  ``--this REV`` puts a
second revision in place of this checkout (also in a temporary worktree), so
two old commits can be compared with today's harness; ``--quiet-wait`` is
passed on to bench/run.py (how long each run waits for the machine to go
quiet first: on a machine that never does, a shorter wait only saves time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (label, key in the harness summary, scale, unit, lower is better)
FIGURES = (
    ("CPU/rt", "relayCpuSecPer1000", 1000, "us", True),
    ("rt/s", "msgsPerSec", 1, "", False),
    ("p99", "latP99ms", 1, "ms", True),
)
#: With --handshakes: the idle test's handshakes per second (higher is better).
HANDSHAKES = ("hs/s", None, 1, "", False)

#: Share of a core that other processes kept busy during a run (the harness
#: measures it) above which the run is left out of the clean medians.
NOISY = 0.05


def run_once(tree: str, args, out: str) -> "tuple[dict, float]":
    """
    One bench/run.py run of ``tree``'s relay: {(send or inline, figure):
    value}, and the most any core was busy with other processes meanwhile.
    """
    tests = "rt,idle" if args.handshakes else "rt"
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "--tests", tests, "--reps", "1",
           "--duration", str(args.duration), "--tree", tree, "--out", out,
           "--quiet-wait", str(args.quiet_wait)]
    if args.inline:
        cmd.append("--inline")
    if args.handshakes:
        cmd += ["--idle-n", str(args.handshakes)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=30 * 60)
    figures = {}
    other = 0.0
    for mode, doc in (("send", "socketdock"), ("inline", "inline"))[:2 if args.inline else 1]:
        with open(os.path.join(out, doc + ".json")) as f:
            document = json.load(f)
        rt = document["summary"]["rt"]
        for label, key, scale, _, _ in FIGURES:
            figures[(mode, label)] = rt[key]["median"] * scale
        if args.handshakes and mode == "send":
            idle = document["summary"][f"idle_{args.handshakes}"]
            rates = sorted(args.handshakes / t for t in idle["openSec"] if t)
            figures[("idle", HANDSHAKES[0])] = rates[len(rates) // 2]
        for result in document["results"]:
            other = max(other, *(result.get("otherBusyPerCore") or [0.0]))
    return figures, other


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="git revision to compare this checkout with")
    p.add_argument("--blocks", type=int, default=4, help="ABBA blocks (four runs each)")
    p.add_argument("--inline", action="store_true", help="also compare inline_reply")
    p.add_argument("--handshakes", type=int, default=0, metavar="N",
                   help="also compare handshakes/s: the idle test opening N connections")
    p.add_argument("--duration", type=int, default=10, help="seconds measured per run")
    p.add_argument("--this", default=None, metavar="REV",
                   help="a revision to run in place of this checkout")
    p.add_argument("--quiet-wait", type=int, default=30,
                   help="seconds each run waits for the machine to go quiet (bench/run.py)")
    args = p.parse_args(argv)

    scratch = tempfile.mkdtemp(prefix="socketdock-ab-")
    base_tree = os.path.join(scratch, "base")
    trees = [base_tree]
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base_tree, args.base],
                   check=True, stdout=subprocess.DEVNULL)
    this_tree = ROOT
    if args.this:
        this_tree = os.path.join(scratch, "this")
        trees.append(this_tree)
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", this_tree, args.this],
                       check=True, stdout=subprocess.DEVNULL)
    runs: dict[str, list[dict]] = {"base": [], "this": []}
    noisy: dict[str, list[bool]] = {"base": [], "this": []}
    try:
        for block in range(args.blocks):
            for n, name in enumerate(("base", "this", "this", "base")):
                tree = base_tree if name == "base" else this_tree
                figures, other = run_once(tree, args, os.path.join(scratch, f"{block}-{n}"))
                runs[name].append(figures)
                noisy[name].append(other > NOISY)
                shown = "  ".join(f"{mode} {label} {value:.0f}" for (mode, label), value in figures.items())
                print(f"block {block + 1} {name:4s}  {shown}  other load {other:.0%}", flush=True)
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)

    this_name = args.this or "this checkout"
    print(f"\nmedians, base ({args.base}) -> {this_name}; blocks {this_name} won:")
    for key in runs["this"][0]:
        mode, label = key
        lower_better = next(f[4] for f in (*FIGURES, HANDSHAKES) if f[0] == label)
        unit = next(f[3] for f in (*FIGURES, HANDSHAKES) if f[0] == label)
        base = [r[key] for r in runs["base"]]
        this = [r[key] for r in runs["this"]]
        won = sum(
            (sum(this[2 * b:2 * b + 2]) < sum(base[2 * b:2 * b + 2])) == lower_better
            for b in range(args.blocks)
        )
        print(f"  {mode:6s} {label:6s} {statistics.median(base):8.1f} -> {statistics.median(this):8.1f} {unit:2s}"
              f"   won {won} of {args.blocks}")
    clean = {name: [r for r, bad in zip(runs[name], noisy[name]) if not bad] for name in runs}
    if any(any(flags) for flags in noisy.values()) and all(clean.values()):
        print(f"\nmedians of the runs during which no core was over {NOISY:.0%} busy with other "
              f"processes ({len(clean['base'])} base, {len(clean['this'])} this checkout):")
        for key in clean["this"][0]:
            mode, label = key
            unit = next(f[3] for f in (*FIGURES, HANDSHAKES) if f[0] == label)
            base = statistics.median(r[key] for r in clean["base"])
            this = statistics.median(r[key] for r in clean["this"])
            print(f"  {mode:6s} {label:6s} {base:8.1f} -> {this:8.1f} {unit:2s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
