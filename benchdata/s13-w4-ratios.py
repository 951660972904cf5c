# Ratios of a W4Life file of /tmp/ab.sh (impl names prefixed base- / new-):
# per pass, new/base of each impl, and each impl over impl=get in one binary.
# Prints medians [min..max] over the passes.
import re, sys, statistics as st, collections
d = collections.defaultdict(dict)
p = None
for l in open(sys.argv[1]):
    if l.startswith('# pass'):
        p = int(l.split()[2])
        continue
    m = re.match(r'(BenchmarkW4Life/store=\w+)/impl=(base|new)-([\w-]+?)-2\s+\d+\s+([\d.]+) ns/op', l)
    if m:
        name, b, impl, v = m.groups()
        d[p][(name, b, impl)] = float(v)
def show(label, xs):
    print(f'  {label}: {st.median(xs):.3f} [{min(xs):.2f}..{max(xs):.2f}]')
for name in sorted({n for q in d for (n, _, _) in d[q]}):
    print(name)
    impls = sorted({i for q in d for (n, _, i) in d[q] if n == name})
    for i in impls:
        xs = [d[q][(name, 'new', i)] / d[q][(name, 'base', i)] for q in d if (name, 'new', i) in d[q] and (name, 'base', i) in d[q]]
        if xs:
            show(f'{i} new/base', xs)
    for b in ('base', 'new'):
        for i in impls:
            xs = [d[q][(name, b, i)] / d[q][(name, b, 'get')] for q in d if (name, b, i) in d[q]]
            if i != 'get' and xs:
                show(f'{b} {i}/get', xs)
    for b in ('base', 'new'):
        xs = [d[q][(name, b, 'compat')] / d[q][(name, b, 'get-chan')] for q in d if (name, b, 'get-chan') in d[q]]
        if xs:
            show(f'{b} compat/get-chan', xs)
