"""Loads a dataset into a database of the PostgreSQL 18 bench server for benches/lsh_vs_hnsw_interleaved.py:
pgvector tables `items (id int, v vector(d))` (ids from 1) and `queries (qid int, v vector(d))`.

    .cache/venv/bin/python benches/load_bench_db.py --dataset synthetic --rows 1000000 --dbname bench_1m
    .cache/venv/bin/python benches/load_bench_db.py --dataset images --dbname bench_img

Datasets are those of benches/lsh_vs_pgvector.py: `synthetic` (its clustered generator, 512-d, cached in
.cache/bench/data_N.npy; queries from the same distribution) and `images` (scripts/make_image_set.py's
1280-d embeddings; queries are crops of held-out photos). GloVe's `bench` database is the one
benches/lsh_vs_pgvector.sh --dataset glove --keep-servers leaves.
"""
import argparse
import os
import sys

import numpy as np
import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsh_vs_pgvector as L  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=["synthetic", "images"], required=True)
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic only")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dbname", required=True)
    ap.add_argument("--port", type=int, default=54418)
    a = ap.parse_args()
    if a.dataset == "synthetic":
        x, q = L.gen_data(a.rows), L.gen_queries(a.queries)
    else:
        x, q = L.images_data(a.queries)
    x = np.asarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    d = x.shape[1]
    c = psycopg.connect(host="127.0.0.1", port=a.port, user="postgres", dbname="postgres", autocommit=True)
    if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (a.dbname,)).fetchone():
        c.execute(f'CREATE DATABASE "{a.dbname}"')
    c = psycopg.connect(host="127.0.0.1", port=a.port, user="postgres", dbname=a.dbname, autocommit=True)
    c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    c.execute("DROP TABLE IF EXISTS items, queries, lsh_items")
    c.execute(f"CREATE TABLE items (id int, v vector({d}))")
    c.execute(f"CREATE TABLE queries (qid int PRIMARY KEY, v vector({d}))")
    L.copy_binary(c, "items", "id", np.arange(1, x.shape[0] + 1, dtype=np.int32), x)
    L.copy_binary(c, "queries", "qid", np.arange(1, q.shape[0] + 1, dtype=np.int32), q)
    c.execute("VACUUM (FREEZE, ANALYZE) items")
    c.execute("VACUUM ANALYZE queries")
    c.execute("CHECKPOINT")
    print(f"{a.dbname}: items {x.shape}, queries {q.shape}")


if __name__ == "__main__":
    main()
