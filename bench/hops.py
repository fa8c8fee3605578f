#!/usr/bin/env python3
"""Per-hop breakdown of remote read faults, from two dsmd debug logs (same clock).

usage: hops.py READER_NODE_LOG OWNER_NODE_LOG
Run a 2-node cluster with RUST_LOG=debug, have node 1 write pages and node 2 read them (e.g.
bench/dsmbench.c `first` then `read`), then point this at node 2's and node 1's logs.
"""
import re
import statistics
import sys
from datetime import datetime


def events(path):
    ev = {}
    for line in open(path):
        m = re.match(r"\[(\S+)Z", line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp() * 1e6
        f = re.search(r"fault: session \d+ segment \S+ page (\d+) read", line)
        if f:
            ev.setdefault(int(f.group(1)), {})["fault"] = t
            continue
        f = re.search(r"(to|from) node \d+: (Request|Grant) \{ key: PageKey \{ segment: SegmentId\(\d+\), page: (\d+) \}",
                      line)
        if f:
            ev.setdefault(int(f.group(3)), {}).setdefault(f"{f.group(1)} {f.group(2)}", t)
    return ev


def main():
    reader, owner = events(sys.argv[1]), events(sys.argv[2])
    hops = {
        "reader's dsmd: fault in -> request out": lambda a, b: a["to Request"] - a["fault"],
        "request to the owner's dsmd (wire + wake-up)": lambda a, b: b["from Request"] - a["to Request"],
        "owner's dsmd: request in -> grant out": lambda a, b: b["to Grant"] - b["from Request"],
        "grant to the reader's dsmd (wire + wake-up), 4 KiB": lambda a, b: a["from Grant"] - b["to Grant"],
        "reader's dsmd: fault in -> grant in": lambda a, b: a["from Grant"] - a["fault"],
    }
    need_a, need_b = {"fault", "to Request", "from Grant"}, {"from Request", "to Grant"}
    pages = [p for p in reader if need_a <= reader[p].keys() and need_b <= owner.get(p, {}).keys()]
    for name, f in hops.items():
        v = [f(reader[p], owner[p]) for p in pages]
        print(f"{name:54} p50 {statistics.median(v):7.1f} µs   (n={len(v)})")


if __name__ == "__main__":
    main()
