# Shared helpers for tests/sh/*.sh. Each test prints "PASS <name>" or "FAIL <name>: why" lines, which
# scripts/test.sh counts, and exits non-zero when anything failed.
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# expect_eq NAME GOT WANT
expect_eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got [$2], want [$3]"; fi; }
finish() { exit $((fails > 0)); }
