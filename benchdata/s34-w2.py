import sys,re,statistics as st,collections
d=collections.defaultdict(dict)
for line in open(sys.argv[1]):
    f=line.split(); b,i,name=f[0],f[1],f[2]
    m=re.search(r'store=(\w+)/impl=([\w-]+?)(-\d+)?$',name)
    store,impl=m.group(1),m.group(2)
    d[(b,store,impl)][i]=(float(f[f.index('ns/msg')-1]),float(f[f.index('allocs/msg')-1]))
bins=sorted({k[0] for k in d})
for store in ['none','mem']:
    for b in bins:
        n=d[(b,store,'notifier')]; fl=d[(b,store,'floor')]
        r=[n[i][0]/fl[i][0] for i in n]
        print(f"{store:4} {b:7} notifier {st.median(v[0] for v in n.values()):8.0f} ns/msg allocs {st.median(v[1] for v in n.values()):6.1f}  floor {st.median(v[0] for v in fl.values()):8.0f}  ratio {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]")
    a,bb=bins
    r=[d[(bb,store,'notifier')][i][0]/d[(a,store,'notifier')][i][0] for i in d[(a,store,'notifier')]]
    print(f"     {bb}/{a} per pass: {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]")
