#!/usr/bin/env python3
"""W3 without a store: the gain from a second publisher, per pass.

Reads lines "pN BenchmarkW3/store=none/churn=0/impl=I[-2] iters ns/op ...",
where the -2 rows ran with -test.cpu 2 (two publishers), and prints, per
implementation, the medians of one and two publishers (us/msg) and the
median [min..max] over passes of (ns/msg of one) / (ns/msg of two).
"""
import collections
import re
import statistics
import sys

rows = collections.defaultdict(dict)
for line in open(sys.argv[1] if len(sys.argv) > 1 else "benchdata/s45-w3.txt"):
    p, name, _, ns = line.split()[:4]
    m = re.match(r"BenchmarkW3/store=none/churn=0/impl=([\w-]+?)(-2)?$", name)
    rows[(m.group(1), bool(m.group(2)))][p] = float(ns)
for impl in ("notifier", "floor", "legacy"):
    one, two = rows[(impl, False)], rows[(impl, True)]
    gain = [one[p] / two[p] for p in one]
    print(f"{impl}: 1 publisher {statistics.median(one.values()) / 1000:.1f} us/msg, "
          f"2 publishers {statistics.median(two.values()) / 1000:.1f} us/msg, "
          f"gain {statistics.median(gain):.2f}x [{min(gain):.2f}..{max(gain):.2f}]")
