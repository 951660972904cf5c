# Summarises a series file of lines "BIN PASS Benchmark... " from two
# binaries (base, then new), e.g. benchdata/s35-fanin-series.txt or
# benchdata/s36-idle-series.txt. For every Notifier row (and every row
# without impl=), prints medians [min..max] over the passes, the per-pass
# ratio to the floor row of the same pass if there is one, and the per-pass
# ratio new/base.
import sys, re, statistics as st, collections

UNITS = ('ns/block', 'ns/pair', 'B/pair', 'ns/end', 'ns/msg')
d = collections.defaultdict(dict)  # (bin, row) -> pass -> {unit: value}
bins, names = [], []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4 or not f[2].startswith('Benchmark'):
        continue
    b, i, name = f[0], f[1], re.sub(r'-\d+$', '', f[2])
    if b not in bins:
        bins.append(b)
    if name not in names:
        names.append(name)
    d[(b, name)][i] = {f[j + 1]: float(f[j]) for j in range(4, len(f) - 1, 2)}
base, new = bins

def med(xs, fmt=',.1f'):
    xs = list(xs)
    return f"{st.median(xs):{fmt}} [{min(xs):{fmt}}..{max(xs):{fmt}}]"

for name in names:
    if 'impl=' in name and not name.endswith('impl=notifier'):
        continue
    floor = name.replace('impl=notifier', 'impl=floor')
    for unit in UNITS:
        if unit not in next(iter(d[(base, name)].values())):
            continue
        for b in bins:
            vals = d[(b, name)]
            line = f"{b:9} {name} {unit}: {med(v[unit] for v in vals.values())}"
            if floor != name and (b, floor) in d:
                fl = d[(b, floor)]
                line += f"  / floor: {med((vals[i][unit] / fl[i][unit] for i in vals), '.2f')}"
            print(line)
        r = [d[(new, name)][i][unit] / d[(base, name)][i][unit] for i in d[(base, name)]]
        print(f"          {new}/{base} per pass: {med(r, '.2f')}")
