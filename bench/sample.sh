#!/bin/sh
# Usage: bench/sample.sh PID
# Prints "SWITCHES CPU_TICKS RSS_KB" for process PID: the voluntary
# context switches of all its threads (each time a thread sleeps, so
# each wake-up counts one), its user+system CPU time in clock ticks
# (getconf CLK_TCK per second) and its resident memory.
set -eu
pid=$1
sw=0
for status in /proc/"$pid"/task/*/status; do
  n=$(awk '/^voluntary_ctxt_switches:/ { print $2 }' "$status" 2>/dev/null) || n=0
  sw=$(( sw + ${n:-0} ))
done
# The fields after the ")" that ends the command name start with the
# 3rd (state); utime and stime, the 14th and 15th, are there 12th, 13th.
ticks=$(sed 's/.*) //' /proc/"$pid"/stat | awk '{ print $12 + $13 }')
rss=$(awk '/^VmRSS:/ { print $2 }' /proc/"$pid"/status)
echo "$sw $ticks $rss"
