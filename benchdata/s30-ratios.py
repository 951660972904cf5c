#!/usr/bin/env python3
"""Medians and per-pass ratios of the twenty-fourth series (BENCHMARKS.md).

usage: python3 benchdata/s30-ratios.py benchdata/s30-boxo-micro.txt base
       python3 benchdata/s30-ratios.py benchdata/s30-w1-legacy.txt legacy

Each benchmark appears once per pass, in pass order, so the k-th result of
one implementation is compared with the k-th of the base implementation of
the same row (the same pass, seconds apart). For every row it prints each
implementation's median [min..max] of the per-block (or per-message, per-key)
figure and the median [min..max] of its per-pass time ratio to the base.
"""
import re
import statistics
import sys

path, base = sys.argv[1], sys.argv[2]
runs = {}
for line in open(path):
    m = re.match(r'^(Benchmark\S+?)(-\d+)?\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) ns/(block|msg|key)', line)
    if m:
        runs.setdefault(m.group(1), []).append(float(m.group(3)))
rows = {}
for name, v in runs.items():
    row, impl = name.rsplit('/impl=', 1)
    rows.setdefault(row, {})[impl] = v


def span(xs, fmt):
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}..{fmt(max(xs))}]"


for row, impls in rows.items():
    print(row)
    b = impls.get(base)
    for impl, v in impls.items():
        line = f"  {impl:16} {span(v, lambda x: f'{x:,.0f}')}"
        if b is not None and impl != base:
            r = [x / y for x, y in zip(v, b)]
            line += f"   time / {base}: {span(r, lambda x: f'{x:.2f}x')}"
            line += f"   {base} / time: {span([1 / x for x in r], lambda x: f'{x:.2f}x')}"
        print(line)
