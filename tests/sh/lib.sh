# shellcheck shell=bash
# Shared helpers for tests/sh/*.sh. Each test prints "PASS <name>" or "FAIL <name>: why" lines and ends
# with finish, which prints "END <passed> <failed>" and exits non-zero when anything failed.
# tests/sh/tap.sh turns that into TAP for prove (scripts/test.sh runs every test that way): a test that
# dies before its END line counts as a failure, so a script that stops early cannot under-report.
fails=0
passes=0
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# expect_eq NAME GOT WANT
expect_eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got [$2], want [$3]"; fi; }
finish() { echo "END $passes $fails"; exit $((fails > 0)); }
