# Medians and per-pass ratios of the second series (BENCHMARKS.md, "Second series").
# Run from the repository root: python3 benchdata/s2-ratios.py
# A per-pass ratio pairs the k-th result of one benchmark with the k-th of the
# other in the same file (the same pass, minutes apart at most).
import re,sys,statistics as st
from collections import defaultdict
def load(fn, unit):
    d=defaultdict(list)
    for line in open(fn):
        if not line.startswith('Benchmark'): continue
        f=line.split()
        for i,x in enumerate(f):
            if x==unit: d[f[0]].append(float(f[i-1]))
    return d
def med(v): return st.median(v)
def show(fn, unit, pairs):
    d=load(fn, unit)
    for a,b,label in pairs:
        if a not in d or b not in d: print("missing",a,b); continue
        n=min(len(d[a]),len(d[b]))
        r=[d[a][i]/d[b][i] for i in range(n)]
        print(f"{label}: {a.split('/',1)[1]} med {med(d[a]):.4g} | {b.split('/',1)[1]} med {med(d[b]):.4g} | per-pass ratio med {med(r):.3f} [{min(r):.2f}..{max(r):.2f}] n={n}")
import sys; sys.path.insert(0,'/tmp/series')

D='benchdata/s2-'
print("== W1 ns/block: notifier / floor (mem floor stores too), notifier / legacy")
for st_ in ['none','mem']:
    for S in [1,16,256]:
        b=f'BenchmarkW1/store={st_}/S={S}/impl='
        show(D+'w12.txt','ns/block',[(b+'notifier-2',b+'floor-2',f'W1 {st_} S={S} notifier/floor'),(b+'legacy-2',b+'notifier-2',f'W1 {st_} S={S} legacy/notifier'),(b+'notifier-func-2',b+'floor-2',f'W1 {st_} S={S} notifier-func/floor')])
print("== W2 ns/msg")
for st_ in ['none','mem']:
    b=f'BenchmarkW2/store={st_}/impl='
    show(D+'w12.txt','ns/msg',[(b+'legacy-2',b+'notifier-2',f'W2 {st_} legacy/notifier'),(b+'notifier-2',b+'floor-2',f'W2 {st_} notifier/floor')])
print("== W3 1pub/2pub (ns/msg at -cpu 1 / at -cpu 2 = throughput gain)")
for st_ in ['none','memconc','flatfs']:
    for impl in ['legacy','notifier','floor']:
        b=f'BenchmarkW3/store={st_}/churn=0/impl={impl}'
        show(D+'w3.txt','ns/msg',[(b,b+'-2',f'W3 {st_} {impl} 2pub/1pub')])
print("== W4 ns/key: notifier / floor(Get)")
for st_ in ['mem','flatfs']:
    for k in [1,64]:
        b=f'BenchmarkW4/store={st_}/keys={k}/impl='
        show(D+'w4.txt','ns/key',[(b+'notifier-2',b+'floor-2',f'W4 {st_} keys={k} notifier/Get'),(b+'legacy-2',b+'floor-2',f'W4 {st_} keys={k} legacy/Get')])
print("== W4Life ns/key: x / get")
for st_ in ['mem','memconc','flatfs']:
    b=f'BenchmarkW4Life/store={st_}/impl='
    show(D+'w4.txt','ns/key',[(b+'notifier-2',b+'get-2',f'W4Life {st_} notifier/Get'),(b+'notifier-request-2',b+'get-2',f'W4Life {st_} request/Get'),(b+'compat-2',b+'get-2',f'W4Life {st_} compat/Get')])
print("== W6 ns/msg 1pub/8pub")
for impl in ['legacy','notifier','floor']:
    show(D+'w6.txt','ns/msg',[(f'BenchmarkW6/store=slowput/pubs=1/impl={impl}-2',f'BenchmarkW6/store=slowput/pubs=8/impl={impl}-2',f'W6 {impl} 8pub/1pub')])
