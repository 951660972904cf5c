# Ratios notifier/legacy of an alternating swapsim series (benchdata/s9-*.txt): per pass,
# blocks/s, latency p50 and p99, and cores used (user+sys over wall, from /usr/bin/time);
# median [min..max] of the passes. Usage: python3 benchdata/s9-swapsim-ratios.py FILE
import re,sys,statistics as st
cur=None; d={}
for l in open(sys.argv[1]):
    m=re.match(r'# pass (\d+) (\w+)',l)
    if m: cur=(int(m.group(1)),m.group(2)); d[cur]={}; continue
    m=re.match(r'(blocks/s|latency p50|latency p99)\s+([\d.]+)(k|ms|s|µs)?\s',l)
    if m and cur:
        v=float(m.group(2)); u=m.group(3)
        if u=='k': v*=1000
        if u=='s': v*=1000
        if u=='µs': v/=1000
        d[cur][m.group(1)]=v
    m=re.match(r'cpu: ([\d.]+) s wall, ([\d.]+) s user, ([\d.]+) s sys',l)
    if m and cur: d[cur]['cores']=(float(m.group(2))+float(m.group(3)))/float(m.group(1))
passes=sorted({p for p,_ in d})
for k in ['blocks/s','latency p50','latency p99','cores']:
    rs=[d[(i,'notifier')][k]/d[(i,'legacy')][k] for i in passes]
    n=[d[(i,'notifier')][k] for i in passes]; g=[d[(i,'legacy')][k] for i in passes]
    print(f"{k:12s} notifier/legacy {st.median(rs):.2f}x [{min(rs):.2f}..{max(rs):.2f}]  medians: notifier {st.median(n):,.2f} legacy {st.median(g):,.2f}  (n={len(rs)})")
    print("   per pass:", " ".join(f"{r:.2f}" for r in rs))
