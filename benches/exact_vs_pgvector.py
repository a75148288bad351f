"""Exact scan (no index) of pg_imgsim's `embedding` against pgvector's `vector` on the same PostgreSQL major.

Uses the PostgreSQL 18 bench server of benches/lsh_vs_pgvector.sh (`bench` database, pgvector table `items`
and `queries` loaded by it) with pg_imgsim installed for PostgreSQL 18 (release build:
`cargo pgrx install --release --pg-config <pg18 pg_config> --no-default-features --features pg18`).
Copies `items` into `embedding` tables (default storage: vectors of 512 dims and more are TOASTed; and
`SET STORAGE PLAIN` copies of both), then times `ORDER BY v <op> q LIMIT 10` with index scans off and no
parallel workers, alternating the two types query by query (so machine noise hits both alike), and prints
median times and the pg_imgsim / pgvector ratio per operator and storage.

    .cache/venv/bin/python benches/exact_vs_pgvector.py [--dsn "host=127.0.0.1 port=5432 user=postgres dbname=bench"]
        [--queries 12] [--rounds 3]
"""
import argparse
import statistics
import time

import psycopg


def setup(c):
    c.execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
    dims = c.execute("SELECT vector_dims(v) FROM items LIMIT 1").fetchone()[0]
    for name, src, typ, plain in (
        ("xv_e", "items", f"embedding({dims})", False),
        ("xv_p", "items", f"vector({dims})", True),
        ("xv_ep", "items", f"embedding({dims})", True),
    ):
        if c.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]:
            continue
        c.execute(f"CREATE TABLE {name} (id int, v {typ})")
        if plain:
            c.execute(f"ALTER TABLE {name} ALTER v SET STORAGE PLAIN")
        cast = "v::real[]::embedding" if typ.startswith("embedding") else "v"
        c.execute(f"INSERT INTO {name} SELECT id, {cast} FROM {src}")
        c.execute(f"VACUUM ANALYZE {name}")
    c.execute("VACUUM ANALYZE items")
    return dims


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=bench")
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    c = psycopg.connect(a.dsn, autocommit=True)
    dims = setup(c)
    rows = c.execute("SELECT count(*) FROM items").fetchone()[0]
    version = c.execute("SHOW server_version").fetchone()[0]
    c.execute("SET max_parallel_workers_per_gather = 0")
    c.execute("SET enable_indexscan = off")
    c.execute("SET enable_bitmapscan = off")
    qs = [r[0] for r in c.execute("SELECT v::text FROM queries ORDER BY qid LIMIT %s", (a.queries,))]
    print(f"exact scan, {rows} x {dims}, PostgreSQL {version}, {a.queries} queries x {a.rounds} rounds, one backend")
    print(f"{'storage':<8} {'op':<4} {'pgvector ms':>12} {'pg_imgsim ms':>13} {'ratio':>7}")
    for storage, (vt, et) in (("toast", ("items", "xv_e")), ("plain", ("xv_p", "xv_ep"))):
        for op in ("<->", "<=>"):
            t = {vt: [], et: []}
            for _ in range(a.rounds):
                for q in qs:
                    for tbl, cast in ((vt, "vector"), (et, "embedding")):
                        s = time.perf_counter()
                        c.execute(f"SELECT id FROM {tbl} ORDER BY v {op} %s::{cast} LIMIT 10", (q,)).fetchall()
                        t[tbl].append(time.perf_counter() - s)
            mv, me = statistics.median(t[vt]) * 1000, statistics.median(t[et]) * 1000
            print(f"{storage:<8} {op:<4} {mv:>12.1f} {me:>13.1f} {me / mv:>7.3f}")


if __name__ == "__main__":
    main()
