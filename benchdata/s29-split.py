# Spot check of 2026-12-05 evening (BENCHMARKS.md): W1 at S=1 split into the
# Notifier's own cost and the store's. Run from the repository root:
#   python3 benchdata/s29-split.py benchdata/s29-w1-s1-split.txt benchdata/s29-w1-s1-nop.txt
# Each file holds six passes of one benchmark command, one after the other;
# the n-th line of a benchmark is its n-th pass. Prints the median [min..max]
# of each row, and of the ratio to the floor computed inside each pass.
import sys, statistics as st, collections

def load(fn):
    d = collections.defaultdict(list)
    for l in open(fn):
        if not l.startswith('BenchmarkW1/'):
            continue
        f = l.split()
        for i, x in enumerate(f):
            if x == 'ns/block':
                d[f[0]].append(float(f[i - 1]))
    return d

def show(xs):
    return f'{st.median(xs):,.1f} [{min(xs):,.1f}..{max(xs):,.1f}]'

for fn in sys.argv[1:]:
    print(f'== {fn}')
    d = load(fn)
    for name in sorted(d):
        print(f'{name}: {show(d[name])} ns/block')
    for name in sorted(d):
        if '/impl=floor' in name:
            continue
        base = name.split('/impl=')[0] + '/impl=floor'
        suffix = '-2' if name.endswith('-2') else ''
        floor = base + suffix
        if floor not in d:
            continue
        xs = [a / b for a, b in zip(d[name], d[floor])]
        print(f'{name} / floor: {show(xs)}x')
