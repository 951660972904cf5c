# Ratios of benchdata/s4-onekey-ab.txt (the one-key Subscribe, base b9891e2 against 2ad7462):
# per pass, each implementation over the blockstore's Get (or the floor) in the same binary,
# and new over base in the same pass; median [min..max] of the passes.
# Usage: python3 benchdata/s4-ratios.py benchdata/s4-onekey-ab.txt
import re,sys,statistics as st
from collections import defaultdict
f=sys.argv[1] if len(sys.argv)>1 else 'benchdata/s4-onekey-ab.txt'
passes=[]; cur=None
for line in open(f):
    if line.startswith('# pass'):
        p=line.split()[2]
        if not passes or passes[-1][0]!=p: passes.append((p,{}))
        cur=passes[-1][1]; continue
    if not line.startswith('Benchmark'): continue
    parts=line.split(); name=parts[0]
    # metric: ns/key for W4, ns/block for W1, ns/msg or ns/op
    vals={parts[i+1]:float(parts[i]) for i in range(2,len(parts)-1,2) if not parts[i+1][0].isdigit()}
    cur[name]=vals
def get(pd,name,metric):
    v=pd.get(name); return None if v is None else v.get(metric)
def ratio(a,b,metric,label):
    rs=[];av=[];bv=[]
    for p,pd in passes:
        x=get(pd,a,metric); y=get(pd,b,metric)
        if x and y: rs.append(x/y); av.append(x); bv.append(y)
    if rs: print(f"{label:60s} {st.median(rs):6.2f}x [{min(rs):.2f}..{max(rs):.2f}]  ({st.median(av):,.0f} / {st.median(bv):,.0f} {metric}, n={len(rs)})")
for b in ['base','new']:
    for store in ['mem','flatfs']:
        for k in [1,64]:
            ratio(f'BenchmarkW4/store={store}/keys={k}/impl={b}-notifier-2',f'BenchmarkW4/store={store}/keys={k}/impl={b}-floor-2','ns/key',f'{b} W4 {store} keys={k} notifier/Get')
    ratio(f'BenchmarkW4/store=mem/keys=1/impl={b}-legacy-2',f'BenchmarkW4/store=mem/keys=1/impl={b}-floor-2','ns/key',f'{b} W4 mem keys=1 legacy/Get')
    for store in ['mem','memconc','flatfs']:
        for impl in ['notifier','notifier-request','compat']:
            ratio(f'BenchmarkW4Life/store={store}/impl={b}-{impl}-2',f'BenchmarkW4Life/store={store}/impl={b}-get-2','ns/key',f'{b} W4Life {store} {impl}/get')
    for S in [1,16,256]:
        ratio(f'BenchmarkW1/store=mem/S={S}/impl={b}-notifier-2',f'BenchmarkW1/store=mem/S={S}/impl={b}-floor-2','ns/block',f'{b} W1 mem S={S} notifier/floor')
    ratio(f'BenchmarkW2/store=mem/impl={b}-notifier-2',f'BenchmarkW2/store=mem/impl={b}-floor-2','ns/msg',f'{b} W2 mem notifier/floor')
print('new/base, same pass:')
for name in ['BenchmarkW4/store=mem/keys=1/impl=X-notifier-2','BenchmarkW4/store=flatfs/keys=1/impl=X-notifier-2','BenchmarkW4Life/store=mem/impl=X-notifier-request-2','BenchmarkW4Life/store=mem/impl=X-notifier-2','BenchmarkW4Life/store=mem/impl=X-compat-2','BenchmarkW1/store=mem/S=1/impl=X-notifier-2','BenchmarkW1/store=mem/S=16/impl=X-notifier-2','BenchmarkW1/store=mem/S=256/impl=X-notifier-2','BenchmarkW2/store=mem/impl=X-notifier-2']:
    metric='ns/key' if 'W4' in name else ('ns/block' if 'W1' in name else 'ns/msg')
    rs=[]
    for p,pd in passes:
        a=get(pd,name.replace('X','new'),metric); b=get(pd,name.replace('X','base'),metric)
        if a and b: rs.append(a/b)
    if rs: print(f"  {name.replace('impl=X-',''):60s} {st.median(rs):.2f} [{min(rs):.2f}..{max(rs):.2f}] n={len(rs)}")
