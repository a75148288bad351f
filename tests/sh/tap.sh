#!/usr/bin/env bash
# TAP adapter for the shell tests: runs one tests/sh/*.sh (or any script printing PASS/FAIL lines and a
# final "END <passed> <failed>"), prints its PASS/FAIL lines as TAP test points ("ok N - ...",
# "not ok N - ..."), everything else as TAP comments, then the plan. One more test point fails when the
# test did not reach its END line (it died early: what it did not get to must not look like a pass), or
# exited non-zero without printing a FAIL line.
#   prove --exec 'bash tests/sh/tap.sh' tests/sh/replica.sh     # or: bash tests/sh/tap.sh tests/sh/replica.sh
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 TEST.sh [args...]" >&2; exit 2; }
n=0 failed=0 ended=0 rc=
while IFS= read -r line; do
  case $line in
    "PASS "*) n=$((n + 1)); echo "ok $n - ${line#PASS }" ;;
    "FAIL "*) n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - ${line#FAIL }" ;;
    "END "*) ended=1; echo "# $line" ;;
    "__tap_exit__ "*) rc=${line#__tap_exit__ } ;;
    *) echo "# $line" ;;
  esac
done < <(bash "$@" 2>&1; echo "__tap_exit__ $?")
if [ "$ended" = 0 ]; then
  n=$((n + 1)); failed=$((failed + 1))
  echo "not ok $n - $1 stopped before its end (exit status ${rc:-unknown}): the tests after that point did not run"
elif [ "${rc:-1}" != 0 ] && [ "$failed" = 0 ]; then
  n=$((n + 1)); failed=$((failed + 1))
  echo "not ok $n - $1 exited with status $rc without a FAIL line"
fi
echo "1..$n"
[ "$failed" = 0 ]
