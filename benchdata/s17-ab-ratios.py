import sys, re, statistics as st, collections
f=sys.argv[1]
passes=collections.defaultdict(dict)
p=None
for l in open(f):
    if l.startswith('# pass'):
        p=int(l.split()[2]); continue
    if not l.startswith('Bench'): continue
    parts=l.split()
    name=parts[0]
    m=re.search(r'impl=(base|new)-notifier',name)
    key=re.sub(r'/impl=.*','',name)
    ns=[float(parts[i-1]) for i,x in enumerate(parts) if x=='ns/block'][0]
    passes[p][(key,m.group(1))]=ns
keys=sorted(set(k for d in passes.values() for (k,_) in d))
for k in keys:
    r=[d[(k,'new')]/d[(k,'base')] for d in passes.values() if (k,'new') in d and (k,'base') in d]
    b=[d[(k,'base')] for d in passes.values() if (k,'base') in d]; n=[d[(k,'new')] for d in passes.values() if (k,'new') in d]
    print(f"{k}: base {st.median(b):.0f} new {st.median(n):.0f} ns/block; new/base {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}] n={len(r)}")
