# Twenty-third series (BENCHMARKS.md): issue 10's in-memory targets on one
# binary, six passes. Per-pass ratios: the two benchmarks of one pass.
# Run from the repository root: python3 benchdata/s27-ratios.py benchdata/s27-targets-
# With benchdata/s27-w3-ab.txt beside them it also prints the W3 A/B of the
# second series' code (766f29b) against this one.
import sys, statistics as st, collections
pre = sys.argv[1]
def load(fn, unit):
    d = collections.defaultdict(dict)
    p = 0
    for l in open(fn):
        if l.startswith('# pass'):
            p = int(l.split()[2])
            continue
        if not l.startswith('Benchmark'):
            continue
        f = l.split()
        for i, x in enumerate(f):
            if x == unit:
                d[p][f[0]] = float(f[i - 1])
    return d
def ratio(d, a, b, label):
    xs = [d[p][a] / d[p][b] for p in d if a in d[p] and b in d[p]]
    ma = st.median([d[p][a] for p in d if a in d[p]])
    mb = st.median([d[p][b] for p in d if b in d[p]])
    print(f'{label}: {st.median(xs):.2f}x [{min(xs):.2f}..{max(xs):.2f}] ({ma:,.0f} / {mb:,.0f}, n={len(xs)})')
d = load(pre + 'w1.txt', 'ns/block')
for s in (1, 16, 256):
    b = f'BenchmarkW1/store=mem/S={s}/impl='
    ratio(d, b + 'notifier-2', b + 'floor-2', f'W1 mem S={s} notifier/floor ns/block')
d = load(pre + 'w4.txt', 'ns/op')
ratio(d, 'BenchmarkW4/store=mem/keys=1/impl=notifier-2', 'BenchmarkW4/store=mem/keys=1/impl=floor-2', 'W4 mem keys=1 notifier/Get')
for stn in ('mem', 'memconc'):
    b = f'BenchmarkW4Life/store={stn}/impl='
    for i in ('notifier-fetch', 'get-chan', 'compat'):
        ratio(d, b + i + '-2', b + 'get-2', f'W4Life {stn} {i}/get')
    ratio(d, b + 'compat-2', b + 'get-chan-2', f'W4Life {stn} compat/get-chan')
d = load(pre + 'w3.txt', 'ns/msg')
for stn in ('none', 'memconc'):
    for i in ('notifier', 'floor'):
        b = f'BenchmarkW3/store={stn}/churn=0/impl={i}'
        ratio(d, b, b + '-2', f'W3 {stn} {i} 2 publishers / 1 (ns/msg at -cpu 1 over -cpu 2)')
d = load(pre + 'w6.txt', 'ns/msg')
for i in ('notifier', 'floor', 'legacy'):
    ratio(d, f'BenchmarkW6/store=slowput/pubs=1/impl={i}-2', f'BenchmarkW6/store=slowput/pubs=8/impl={i}-2', f'W6 {i} 8 publishers / 1')

# The W3 A/B: passes alternate between two binaries, "# pass N LABEL".
try:
    ab = collections.defaultdict(lambda: collections.defaultdict(dict))
    p = label = None
    for l in open('benchdata/s27-w3-ab.txt'):
        if l.startswith('# pass'):
            _, _, p, label = l.split()
            continue
        f = l.split()
        if f and f[0].startswith('Benchmark') and 'ns/msg' in f:
            ab[label][int(p)][f[0]] = float(f[f.index('ns/msg') - 1])
    for label in ab:
        for i in ('notifier', 'floor'):
            b = f'BenchmarkW3/store=none/churn=0/impl={i}'
            ratio(ab[label], b, b + '-2', f'W3 A/B {label} none {i} 2 publishers / 1')
except FileNotFoundError:
    pass
