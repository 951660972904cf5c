# W1 with the floor-work diagnostic rows (benchdata/s14-w1-work.txt): per
# store and S, the median [min..max] over the passes of each row's ns/block
# and of its ratio to the floor's in the same pass; and what a round of
# benchkit.Work costs (BenchmarkFloorWork).
import re, sys, statistics as st, collections
passes, cur, work = [], None, []
for l in open(sys.argv[1]):
    if l.startswith('goos:') and (cur is None or cur):
        cur = {}
        passes.append(cur)
    m = re.match(r'BenchmarkW1/store=(\w+)/S=(\d+)/impl=([\w-]+?)(?:-2)?\s+\d+\s+\d+ ns/op\s+([\d.]+) ns/block', l)
    if m:
        store, s, impl, v = m.groups()
        cur[(store, int(s), impl)] = float(v)
    m = re.match(r'BenchmarkFloorWork/rounds=(\d+)(?:-2)?\s+\d+\s+([\d.]+) ns/op', l)
    if m:
        work.append(float(m.group(2)) / int(m.group(1)))
passes = [p for p in passes if p]
def fmt(xs):
    return f'{st.median(xs):7.1f} [{min(xs):.1f}..{max(xs):.1f}]'
print(f'{len(passes)} passes; a round of Work: {st.median(work):.2f} ns [{min(work):.2f}..{max(work):.2f}]')
impls = ('notifier', 'floor', 'floor-work8', 'floor-work24')
for store in ('none', 'mem'):
    for s in (1, 16, 256):
        print(f'store={store} S={s}')
        for impl in impls:
            ps = [p for p in passes if (store, s, impl) in p and (store, s, 'floor') in p]
            v = [p[(store, s, impl)] for p in ps]
            r = [p[(store, s, impl)] / p[(store, s, 'floor')] for p in ps]
            print(f'  {impl:13} {fmt(v)} ns/block   / floor {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]')
