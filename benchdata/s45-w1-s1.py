#!/usr/bin/env python3
"""W1 at S=1 on one core, by store: where the Notifier's time per block goes.

Reads lines "pN BenchmarkW1/store=K/S=1/impl=I iters ns/op ns/block ...",
and prints, per store and implementation, the median ns/block of the passes,
and per store the median [min..max] over passes of notifier / floor.
"""
import collections
import re
import statistics
import sys

rows = collections.defaultdict(dict)
for line in open(sys.argv[1] if len(sys.argv) > 1 else "benchdata/s45-w1-s1.txt"):
    f = line.split()
    m = re.match(r"BenchmarkW1/store=(\w+)/S=1/impl=([\w-]+)$", f[1])
    rows[(m.group(1), m.group(2))][f[0]] = float(f[5])
for store in ("none", "nop", "mem"):
    med = {i: statistics.median(rows[(store, i)].values()) for i in ("floor", "notifier-func", "notifier")}
    r = [rows[(store, "notifier")][p] / rows[(store, "floor")][p] for p in rows[(store, "floor")]]
    print(f"store={store}: " + ", ".join(f"{i} {v:.0f}" for i, v in med.items())
          + f" ns/block; notifier / floor {statistics.median(r):.2f}x [{min(r):.2f}..{max(r):.2f}]")
