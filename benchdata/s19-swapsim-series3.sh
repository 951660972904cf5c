#!/bin/bash
out=$1
: > $out
for i in $(seq 1 12); do
  case $((i%3)) in
    1) order="base:notifier new:notifier base:legacy";;
    2) order="base:legacy base:notifier new:notifier";;
    0) order="new:notifier base:legacy base:notifier";;
  esac
  for x in $order; do
    bin=${x%%:*}; impl=${x##*:}
    echo "# pass $i $bin-$impl" >> $out
    sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "cpu: %e s wall, %U s user, %S s sys" \
      /tmp/swapsim-$bin -store flatfs -impl $impl -duration 5s -seed $i -progress 0 >> $out 2>&1
  done
done
