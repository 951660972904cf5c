import re,sys,statistics as st,collections
# per pass: value by (bench-without-impl, base/new, impl); prints new/base per bench and impl/floor ratios
d=collections.defaultdict(dict); p=None
for l in open(sys.argv[1]):
    if l.startswith('# pass'): p=int(l.split()[2]); continue
    m=re.match(r'(Benchmark\S+?)/impl=(base|new)-([\w-]+?)-2\s+\d+\s+\d+ ns/op\s+(.*)',l)
    if not m: continue
    name,b,impl,rest=m.groups()
    vals=dict((u,float(v)) for v,u in re.findall(r'([\d.]+) (\S+)',rest))
    d[p][(name,b,impl)]=vals
keys=sorted({(n,i) for p in d for (n,b,i) in d[p]})
def med(xs): return round(st.median(xs),3), [round(x,2) for x in xs]
for n,i in keys:
    unit='ns/block' if 'W1' in n else 'ns/msg'
    nb=[d[p][(n,'new',i)][unit]/d[p][(n,'base',i)][unit] for p in d if (n,'new',i) in d[p]]
    vb=[d[p][(n,'base',i)][unit] for p in d]; vn=[d[p][(n,'new',i)][unit] for p in d]
    al=[(d[p][(n,'base',i)].get('allocs/msg') or d[p][(n,'base',i)]['allocs/op'], d[p][(n,'new',i)].get('allocs/msg') or d[p][(n,'new',i)]['allocs/op']) for p in d][0]
    print(n,i,unit,'base med',round(st.median(vb),1),'new med',round(st.median(vn),1),'new/base',*med(nb),'allocs',al)
    if i=='notifier' and any((n,'base','floor') in d[p] for p in d):
        for b in ('base','new'):
            r=[d[p][(n,b,'notifier')][unit]/d[p][(n,b,'floor')][unit] for p in d]
            print('   ',b,'notifier/floor',*med(r))
