# Summarises benchdata/s35-fanin-series.txt: lines "BIN PASS Benchmark... ",
# two binaries (base, then new). Prints medians [min..max] over the passes,
# and per-pass ratios new/base of the Notifier's figure.
import sys, re, statistics as st, collections

d = collections.defaultdict(dict)  # (bin, row) -> pass -> {unit: value}
bins = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4 or not f[2].startswith('Benchmark'):
        continue
    b, i, name = f[0], f[1], re.sub(r'-\d+$', '', f[2])
    if b not in bins:
        bins.append(b)
    d[(b, name)][i] = {f[j + 1]: float(f[j]) for j in range(4, len(f) - 1, 2)}
base, new = bins

def med(xs, fmt=',.1f'):
    xs = list(xs)
    return f"{st.median(xs):{fmt}} [{min(xs):{fmt}}..{max(xs):{fmt}}]"

def show(name, unit, floor=None):
    for b in bins:
        vals = d[(b, name)]
        line = f"{b:8} {name} {unit}: {med(v[unit] for v in vals.values())}"
        if floor:
            fl = d[(b, floor)]
            line += f"  / floor: {med((vals[i][unit] / fl[i][unit] for i in vals), '.2f')}"
        print(line)
    r = [d[(new, name)][i][unit] / d[(base, name)][i][unit] for i in d[(base, name)]]
    print(f"         {new}/{base} per pass: {med(r, '.2f')}")

for s in (100, 1000, 10000):
    show(f"BenchmarkUnsubscribeOneKeyOfMany/subs={s}", 'ns/end')
for s in (1, 16, 256):
    show(f"BenchmarkW1/store=mem/S={s}/impl=notifier", 'ns/block', f"BenchmarkW1/store=mem/S={s}/impl=floor")
for store in ('none', 'mem'):
    show(f"BenchmarkW2/store={store}/impl=notifier", 'ns/msg', f"BenchmarkW2/store={store}/impl=floor")
for keys in ('shared', 'disjoint'):
    show(f"BenchmarkW5/store=mem/keys={keys}/impl=notifier", 'B/pair')
    show(f"BenchmarkW5/store=mem/keys={keys}/impl=notifier", 'ns/pair')
