import sys,re,statistics as st,collections
d=collections.defaultdict(dict)
for line in open(sys.argv[1]):
    f=line.split()
    b,i,name=f[0],f[1],f[2]
    m=re.search(r'S=(\d+)/impl=([\w-]+?)(-\d+)?$',name)
    S,impl=m.group(1),m.group(2)
    v=float(f[f.index('ns/block')-1])
    d[(b,S,impl)][i]=v
bins=sorted({k[0] for k in d}); Ss=sorted({k[1] for k in d},key=int)
for S in Ss:
    for b in bins:
        n=d[(b,S,'notifier')]; fl=d[(b,S,'floor')]
        r=[n[i]/fl[i] for i in n if i in fl]
        print(f"S={S:>3} {b:6} notifier {st.median(n.values()):7.0f} floor {st.median(fl.values()):6.0f} ratio med {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]")
    if len(bins)==2:
        a,bb=bins
        r=[d[(bb,S,'notifier')][i]/d[(a,S,'notifier')][i] for i in d[(a,S,'notifier')] if i in d[(bb,S,'notifier')]]
        print(f"      {bb}/{a} notifier per pass: med {st.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]")
