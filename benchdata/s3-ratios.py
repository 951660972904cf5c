# Medians and per-pass ratios of the W3 scaling series (BENCHMARKS.md, "W3: overlapping
# keys against keys of one's own"). Run from the repository root:
#   python3 benchdata/s3-ratios.py
# A per-pass ratio pairs the k-th result of one benchmark with the k-th of the other in the
# same file (the same pass, a minute apart at most).
import statistics as st
from collections import defaultdict


def load(fn, unit):
    d = defaultdict(list)
    for line in open(fn):
        if not line.startswith('Benchmark'):
            continue
        f = line.split()
        for i, x in enumerate(f):
            if x == unit:
                d[f[0]].append(float(f[i - 1]))
    return d


def show(d, one, two, label):
    if one not in d or two not in d:
        print('missing', one, two)
        return
    n = min(len(d[one]), len(d[two]))
    r = [d[one][i] / d[two][i] for i in range(n)]
    print(f"{label}: 1 publisher {st.median(d[one]):.4g} ns/msg, 2 publishers {st.median(d[two]):.4g}"
          f" | gain per pass: median {st.median(r):.3f} [{min(r):.2f}..{max(r):.2f}] n={n}")


w3d = load('benchdata/s3-w3d.txt', 'ns/msg')
w3 = load('benchdata/s3-w3.txt', 'ns/msg')
for store in ['none', 'memconc', 'flatfs']:
    for impl in ['legacy', 'notifier', 'floor']:
        b = f'BenchmarkW3Disjoint/store={store}/pubs='
        show(w3d, f'{b}1/impl={impl}-2', f'{b}2/impl={impl}-2', f'W3Disjoint {store} {impl}')
        b = f'BenchmarkW3/store={store}/churn=0/impl={impl}'
        show(w3, b, b + '-2', f'W3         {store} {impl}')
