#!/bin/sh
# Usage: bench/write_benchmarks.sh RESULTS COMMAND RUNS [FILE]
# Regenerates the "Cron next-fire evaluation" section of FILE (default
# BENCHMARKS.md) from cron_bench's Markdown output in RESULTS, with the
# date, the machine, COMMAND (what to type to measure again), RUNS (the
# bench command line it ran) and the compiler, $CC. The
# section sits between two comment markers so that other benchmarks can
# keep sections of their own in the same file; those are left alone.
set -eu

results=$1
command=$2
runs=$3
file=${4:-BENCHMARKS.md}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)

section=$(mktemp)
trap 'rm -f "$section" "$file.tmp"' EXIT
{
  echo "<!-- cron-bench: begin; make bench rewrites this section -->"
  echo "## Cron next-fire evaluation"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: ${cpu:-unknown CPU}, $(nproc) cores, $mem memory," \
    "Linux $(uname -r)"
  echo "- Command: \`$command\`, which runs \`$runs\`"
  echo "- Compiler: $(${CC:-cc} --version | head -n 1), -O2"
  echo
  cat "$results"
  echo "<!-- cron-bench: end -->"
} >"$section"

if [ -f "$file" ] && grep -q '^<!-- cron-bench: begin' "$file"; then
  awk -v section="$section" '
    /^<!-- cron-bench: begin/ {
      while ((getline line < section) > 0) print line
      skip = 1
      next
    }
    /^<!-- cron-bench: end/ { skip = 0; next }
    !skip { print }
  ' "$file" >"$file.tmp"
  mv "$file.tmp" "$file"
elif [ -f "$file" ]; then
  { echo; cat "$section"; } >>"$file"
else
  {
    echo "# Benchmarks"
    echo
    echo "Measured figures, one section per benchmark; each section names"
    echo "its date, machine and command, and is rewritten by that command."
    echo
    cat "$section"
  } >"$file"
fi
