#!/usr/bin/env bash
# `make test` in two lanes side by side (which target goes where: mk/*.mk, balanced by
# measured durations): lane "process" (lint, integration, compose end to end, molecule ha,
# default) and lane "systemd" (unit, molecule fleet, the longest scenario, rabbitmq). Molecule spends
# most of its time waiting on containers, systemd and Sentinel timers, so the two lanes
# share the two cores well (sequential: TEST_LANES=1 make test).
# Usage: lanes.sh "<targets of lane 1>" "<targets of lane 2>"
set -o errexit -o pipefail -o nounset
logs=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$logs"

lane() {  # lane NAME TARGETS...: run the targets in order, stop at the first failure
  local name=$1; shift
  local t start
  for t in "$@"; do
    start=$(date +%s)
    echo "==> [$name] make $t"
    if ! make --no-print-directory "$t"; then
      echo "==> [$name] make $t FAILED after $(( $(date +%s) - start )) s"
      return 1
    fi
    echo "==> [$name] make $t ok in $(( $(date +%s) - start )) s"
  done
}

if [ "${TEST_LANES:-2}" = 1 ]; then
  # shellcheck disable=SC2086  # word splitting of the target lists is intended
  lane all $1 $2
  exit
fi

# Each lane's output goes to its own log, prefixed on the terminal as it comes.
# shellcheck disable=SC2086
( lane process $1 > >(tee "$logs/process.log" | sed -u 's/^/[process] /') 2>&1 ) &
p1=$!
# shellcheck disable=SC2086
( lane systemd $2 > >(tee "$logs/systemd.log" | sed -u 's/^/[systemd] /') 2>&1 ) &
p2=$!
rc1=0; rc2=0
wait "$p1" || rc1=$?
wait "$p2" || rc2=$?
sleep 1  # let the prefixers flush
echo "==> summary (full logs in $logs/)"
grep -h -E '^==> \[(process|systemd)\] make .* (ok in|FAILED)' "$logs/process.log" "$logs/systemd.log" || true
if [ "$rc1" != 0 ] || [ "$rc2" != 0 ]; then
  # The tail of a CI log is often all that survives: name what failed here.
  echo "==> what failed (pytest, molecule and make lines from the lane logs)"
  grep -h -E '^(FAILED|ERROR) |^E  +[A-Za-z]+(Error|Exception)|Executed: Failed|^make(\[[0-9]+\])?: \*\*\*' \
    "$logs/process.log" "$logs/systemd.log" | grep -v "FAILED - RETRYING" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 | tail -n 40 || true
  echo "==> make test FAILED (process lane rc=$rc1, systemd lane rc=$rc2)"
  exit 1
fi
echo "==> make test passed"
