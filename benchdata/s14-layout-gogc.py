# benchdata/s14-w1-layout.txt: W1 S=256 in three binaries of the same
# Notifier code, median [min..max] of the passes per binary, store and impl.
# benchdata/s14-w1-gogc.txt: W1 S=1 at -cpu 1 with GOGC=100 and off, the
# same per setting, store and impl.
import re, sys, statistics as st, collections
def fmt(xs):
    return f'{st.median(xs):7.1f} [{min(xs):.1f}..{max(xs):.1f}]'
for path in sys.argv[1:]:
    d = collections.defaultdict(list)
    for l in open(path):
        m = re.match(r'(\S+) BenchmarkW1/store=(\w+)/S=(\d+)/impl=([\w-]+?)(?:-2)?\s+\d+\s+\d+ ns/op\s+([\d.]+) ns/block', l)
        if m:
            tag, store, s, impl, v = m.groups()
            d[(tag, store, int(s), impl)].append(float(v))
    print(path)
    for k in sorted(d):
        print(f'  {k[0]:10} store={k[1]:5} S={k[2]:<4} {k[3]:9} {fmt(d[k])} ns/block  (n={len(d[k])})')
