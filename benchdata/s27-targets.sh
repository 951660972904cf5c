#!/bin/bash
# twenty-third series: issue 10's in-memory targets on the current code
# Usage: go test -c -o /tmp/s27/bench.test . && bash benchdata/s27-targets.sh [OUT]
B=${B:-/tmp/s27/bench.test}
OUT=${1:-/tmp/s27}
mkdir -p "$OUT" && cd "$OUT" || exit 1
for i in 1 2 3 4 5 6; do
  echo "# pass $i $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a w1.txt w4.txt w3.txt w6.txt >/dev/null
  $B -test.run '^$' -test.bench '^BenchmarkW1$/store=mem/S=(1|16|256)/impl=(notifier|floor)$' -test.benchtime 100x >> w1.txt
  $B -test.run '^$' -test.bench '^BenchmarkW4$/store=mem/keys=1/impl=(notifier|floor)$|^BenchmarkW4Life$/store=mem/impl=(get|get-chan|compat|notifier-fetch)$' -test.benchtime 1s >> w4.txt
  $B -test.run '^$' -test.bench '^BenchmarkW3$/store=(none|memconc)$/churn=0$/impl=(notifier|floor)$' -test.benchtime 1s -test.cpu 1,2 >> w3.txt
  $B -test.run '^$' -test.bench '^BenchmarkW6$' -test.benchtime 10x >> w6.txt
done
echo done $(date -u +%H:%M:%S) > done
