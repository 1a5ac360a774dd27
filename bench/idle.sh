#!/bin/sh
# Usage: bench/idle.sh OUT CMD [ARG...]
# Workload D, measured from outside: starts CMD with BENCH_T0 (a whole
# second 3 s ahead, when its once-a-minute job first fires), samples
# the process 5 s after that fire and 5 s before the next one, then
# stops it with SIGTERM. Writes one JSON line to OUT: resident memory at
# the second sample, and the voluntary context switches (wake-ups) of
# all its threads and the CPU time it used between the two samples.
set -eu
out=$1
shift

t0=$(( $(date +%s) + 3 ))
BENCH_T0=$t0 "$@" >"$out.log" 2>&1 &
pid=$!

sleep_until() {
  sleep "$(awk -v t="$1" -v now="$(date +%s.%N)" \
    'BEGIN { d = t - now; printf "%.3f", (d > 0 ? d : 0) }')"
}

sleep_until $(( t0 + 5 ))
first=$(bench/sample.sh "$pid")
sleep_until $(( t0 + 55 ))
second=$(bench/sample.sh "$pid")
kill -TERM "$pid"
wait "$pid" || true

echo "$first $second $(getconf CLK_TCK)" | awk '{
  printf "{\"rss_kb\":%d,\"wakeups\":%d,\"cpu_s\":%.3f,\"window_s\":50}\n",
    $6, $4 - $1, ($5 - $2) / $7 }' >"$out"
