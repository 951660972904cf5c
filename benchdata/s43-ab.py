# Prints, for each benchmark of the s43 files (benchdata/s43-waitmu-ab-*.txt), the
# medians of the two binaries (b3: 75d4d0e, before internal/waitmu; n3: e284812) and
# the median [min..max] of the per-pass ratio n3 / b3, in ns/block or ns/key.
# Usage: python3 benchdata/s43-ab.py benchdata/s43-waitmu-ab-w1.txt benchdata/s43-waitmu-ab-w4.txt
# (W4 and W4Life of the second file, at -test.benchtime 1s, replace those of the first.)
# With -b B -n N it reads binaries named B and N instead: python3 benchdata/s43-ab.py -b b4 -n n4
# benchdata/s44-compat-epochs-ab.txt (b4: 7573e87, n4: 12f77e7, whose library is 17b36db's).
import sys,re,statistics as st
from collections import defaultdict
vals=defaultdict(lambda: defaultdict(dict))
args=sys.argv[1:]
B,N='b3','n3'
while args and args[0] in ('-b','-n'):
    if args[0]=='-b': B=args[1]
    else: N=args[1]
    args=args[2:]
for f in args:
    p=b=None
    for line in open(f):
        m=re.match(r'# pass (\d+) binary (\w+)',line)
        if m: p,b=int(m.group(1)),m.group(2); continue
        if line.startswith('Benchmark'):
            name=line.split()[0]
            m=re.search(r'([\d.]+) ns/(block|key)',line)
            vals[name][p][b]=float(m.group(1))
for name,ps in vals.items():
    bs=[ps[p][B] for p in ps if B in ps[p]]; ns=[ps[p][N] for p in ps if N in ps[p]]
    r=[ps[p][N]/ps[p][B] for p in ps if B in ps[p] and N in ps[p]]
    print(f"{name:55s} base {st.median(bs):8.1f} new {st.median(ns):8.1f}  new/base {st.median(r):.2f}x [{min(r):.2f}..{max(r):.2f}] n={len(r)}")
