# W1 on none, nop and mem (benchdata/s13-w1-nop.txt): per pass and GOMAXPROCS,
# the Notifier's and the floor's ns/block, their difference (what the Notifier
# adds) and their ratio. Prints medians [min..max] over the passes.
import re, sys, statistics as st, collections
d = collections.defaultdict(dict)
key = None
for l in open(sys.argv[1]):
    if l.startswith('# pass'):
        f = l.split()
        key = (int(f[2]), int(f[4]))
        continue
    m = re.match(r'BenchmarkW1/store=(\w+)/S=(\d+)/impl=(\w+)(?:-2)?\s+\d+\s+\d+ ns/op\s+([\d.]+) ns/block', l)
    if m:
        store, s, impl, v = m.groups()
        d[key][(store, int(s), impl)] = float(v)
def fmt(xs):
    return f'{st.median(xs):7.1f} [{min(xs):.1f}..{max(xs):.1f}]'
for cpu in (1, 2):
    print(f'GOMAXPROCS {cpu}')
    for s in (1, 16):
        for store in ('none', 'nop', 'mem'):
            ps = [k for k in d if k[1] == cpu and (store, s, 'notifier') in d[k]]
            nt = [d[k][(store, s, 'notifier')] for k in ps]
            fl = [d[k][(store, s, 'floor')] for k in ps]
            print(f'  S={s:<3} {store:5} notifier {fmt(nt)}  floor {fmt(fl)}  '
                  f'difference {fmt([a - b for a, b in zip(nt, fl)])}  ratio {st.median([a / b for a, b in zip(nt, fl)]):.2f}')
