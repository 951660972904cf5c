# Ratios of a three-way swapsim series (benchdata/s19-*.txt, made by s19-swapsim-series3.sh):
# per pass, A/legacy, B/legacy and B/A for blocks/s, latency p50 and p99, and cores used
# (user+sys over wall, from /usr/bin/time); median [min..max] of the passes, and the runs
# whose checker found violations.
# Usage: python3 benchdata/s19-swapsim-ratios3.py FILE A B LEGACY
#   e.g. ... benchdata/s19-swapsim-flatfs-busymarks.txt base-notifier new-notifier base-legacy
import re, sys, statistics as st

cur = None
d = {}
for l in open(sys.argv[1]):
    m = re.match(r'# pass (\d+) (\S+)', l)
    if m:
        cur = (int(m.group(1)), m.group(2))
        d[cur] = {'viol': 0}
        continue
    m = re.match(r'(blocks/s|latency p50|latency p99)\s+([\d.]+)(k|ms|s|µs)?\s', l)
    if m and cur:
        v = float(m.group(2))
        v *= {'k': 1000, 's': 1000, 'µs': 0.001}.get(m.group(3), 1)
        d[cur][m.group(1)] = v
    m = re.match(r'cpu: ([\d.]+) s wall, ([\d.]+) s user, ([\d.]+) s sys', l)
    if m and cur:
        d[cur]['cores'] = (float(m.group(2)) + float(m.group(3))) / float(m.group(1))
    m = re.match(r'VIOLATIONS\s+(\d+)', l)
    if m and cur:
        d[cur]['viol'] = int(m.group(1))
passes = sorted({p for p, _ in d})
A, B, L = sys.argv[2:5]
for k in ['blocks/s', 'latency p50', 'latency p99', 'cores']:
    for x, y in [(A, L), (B, L), (B, A)]:
        rs = [d[(i, x)][k] / d[(i, y)][k] for i in passes]
        mx = st.median([d[(i, x)][k] for i in passes])
        my = st.median([d[(i, y)][k] for i in passes])
        print(f"{k:12s} {x}/{y} {st.median(rs):.2f}x [{min(rs):.2f}..{max(rs):.2f}]  medians {mx:,.1f} / {my:,.1f}  (n={len(rs)})")
for x in (A, B, L):
    bad = [i for i in passes if d[(i, x)]['viol']]
    print(f"violations {x}: {len(bad)} of {len(passes)} runs {bad}")
