"""Queries per backend CPU second of the lsh index at one setting, for A/B comparisons of two builds of
pg_imgsim on the PostgreSQL 18 bench server (the `lsh_items` table and index that
benches/lsh_vs_hnsw_interleaved.py leaves in a database).

    .cache/venv/bin/python benches/qps_per_cpu.py DBNAME [RERANK [SCAN_FRACTION [ROUNDS]]]

Runs the first 100 `queries` once to warm up, then ROUNDS (default 3) rounds of them and prints the best
round's queries per CPU second of the backend (/proc/PID/schedstat; RERANK and SCAN_FRACTION 0 =
automatic). To compare builds, install each `.so` in turn by copy and rename, never in place (a backend
that has the old file mapped keeps it; `cargo pgrx install` overwrites it in place):
    cp A.so $LIBDIR/.tmp.so && mv $LIBDIR/.tmp.so $LIBDIR/pg_imgsim.so
and alternate A and B several times: on this shared 2-core box one run moves by ±10 %.
"""
import sys

import psycopg


def cpu_s(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def main():
    db = sys.argv[1]
    rerank = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    fraction = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    c = psycopg.connect(host="127.0.0.1", port=54418, user="postgres", dbname=db, autocommit=True)
    c.prepare_threshold = None
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    c.execute("SET enable_seqscan = off")
    c.execute(f"SET lsh.rerank = {rerank}")
    c.execute(f"SET lsh.scan_fraction = {fraction}")
    op = "<->" if "l2" in c.execute(
        "SELECT opcname FROM pg_index i JOIN pg_opclass o ON o.oid = i.indclass[0] "
        "WHERE i.indexrelid = 'lsh_items_idx'::regclass").fetchone()[0] else "<=>"
    sql = f"SELECT id FROM lsh_items ORDER BY v {op} %s::embedding LIMIT 10"
    qs = [v for (v,) in c.execute("SELECT v::text FROM queries ORDER BY qid LIMIT 100")]
    for v in qs:
        c.execute(sql, (v,)).fetchall()
    best = float("inf")
    for _ in range(rounds):
        c0 = cpu_s(pid)
        for v in qs:
            c.execute(sql, (v,)).fetchall()
        best = min(best, cpu_s(pid) - c0)
    print(f"{db} rerank {rerank} fraction {fraction}: {len(qs) / best:.1f} queries per CPU second "
          f"(best of {rounds} rounds of {len(qs)})")


if __name__ == "__main__":
    main()
