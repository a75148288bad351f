"""lsh against pgvector's hnsw on the same PostgreSQL major, query by query, so that machine noise hits both.

On this shared 2-core box single side-by-side runs (benches/lsh_vs_pgvector.sh) vary by up to 2x between
runs for one method and not the other, so their lsh / hnsw ratios swing. This script puts both indexes
on one PostgreSQL 18 server (the bench server of benches/lsh_vs_pgvector.sh, started with --keep-servers,
whose `bench` database holds pgvector's `items` and `queries` for the dataset last loaded there; other
datasets go into other databases with benches/load_bench_db.py, chosen with --dbname) with
pg_imgsim installed for PostgreSQL 18 (release build:
`cargo pgrx install --release --pg-config <pg18 pg_config> --no-default-features --features pg18`):
  * copies `items` into an `embedding` table `lsh_items` and builds the lsh index (default options) and
    pgvector's hnsw (m 16, ef_construction 64) on `items`, timing both builds (one backend each);
  * computes the exact top-10 of each query with a seq scan (pgvector's distance);
  * for every pair (lsh.rerank R, hnsw.ef_search E) alternates the two index scans query by query in one
    backend, timing each (client wall clock; and the backend's CPU time from /proc/PID/schedstat, which
    is what the ratios use), over --rounds rounds;
  * prints recall@10 and median ms / CPU ms per setting, and lsh / hnsw queries per CPU second at equal
    recall (hnsw's curve interpolated).

    .cache/venv/bin/python benches/lsh_vs_hnsw_interleaved.py [--metric cosine|l2] [--queries 100]
        [--rerank 200,500,1000,2000] [--ef 40,80,160,320,640] [--rounds 2] [--port 54418]
        [--reuse-indexes | --reuse-hnsw] [--dbname bench] [--lsh-with 'tables = 1']
        [--maintenance-work-mem 2GB] [--prewarm] [--ivfflat LISTS --probes 10,20,40] [--json OUT]
  (a --rerank entry R@F also sets lsh.scan_fraction = F: the share of rows a sketch scan reads first)
"""
import argparse
import json
import os
import statistics
import time

import psycopg


def backend_cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=54418)
    ap.add_argument("--dbname", default="bench")
    ap.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rerank", default="200,500,1000,2000")
    ap.add_argument("--ef", default="40,80,160,320,640")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reuse-indexes", action="store_true", help="keep the indexes of a previous run (no builds)")
    ap.add_argument("--reuse-hnsw", action="store_true", help="rebuild lsh, keep a previous run's hnsw")
    ap.add_argument("--ivfflat", type=int, default=0, metavar="LISTS",
                    help="also pgvector's ivfflat with LISTS lists (built unless it exists), timed at --probes")
    ap.add_argument("--probes", default="10,20,40", help="ivfflat.probes settings (with --ivfflat)")
    ap.add_argument("--json", help="also write the rows as a results file for benches/plot_recall_qps.py")
    ap.add_argument("--prewarm", action="store_true",
                    help="load both indexes into shared buffers (pg_prewarm) before timing")
    ap.add_argument("--lsh-with", default="", help="storage parameters of the lsh index, e.g. 'tables = 1'")
    ap.add_argument("--maintenance-work-mem", default="2GB",
                    help="for both builds (hnsw's graph must fit: about 2.5 GB at 1M x 512)")
    a = ap.parse_args()
    op = "<=>" if a.metric == "cosine" else "<->"
    lsh_ops, hnsw_ops = f"embedding_{a.metric}_ops", f"vector_{a.metric}_ops"
    c = psycopg.connect(host="127.0.0.1", port=a.port, user="postgres", dbname=a.dbname, autocommit=True)
    # No server-side prepared statements: a generic plan of `ORDER BY v <=> $1` may not use hnsw (a first
    # run measured seq scans as "hnsw" that way).
    c.prepare_threshold = None
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    version = c.execute("SHOW server_version").fetchone()[0]
    c.execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
    imgsim = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'").fetchone()[0]
    pgv = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    dims = c.execute("SELECT vector_dims(v) FROM items LIMIT 1").fetchone()[0]
    rows = c.execute("SELECT count(*) FROM items").fetchone()[0]
    for s in ("max_parallel_workers_per_gather = 0", "max_parallel_maintenance_workers = 0",
              f"maintenance_work_mem = '{a.maintenance_work_mem}'", "jit = off"):
        c.execute(f"SET {s}")
    print(f"lsh vs hnsw interleaved: {rows} x {dims}, {a.metric}, PostgreSQL {version}, pg_imgsim {imgsim}, "
          f"pgvector {pgv}, {a.queries} queries x {a.rounds} rounds, one backend", flush=True)

    # Only this script's indexes on these tables (a leftover index would be measured instead).
    if not a.reuse_indexes:
        c.execute("DROP INDEX IF EXISTS lsh_items_idx")
        if not a.reuse_hnsw:
            c.execute("DROP INDEX IF EXISTS items_hnsw_idx")
    if not c.execute("SELECT to_regclass('lsh_items')").fetchone()[0]:
        c.execute(f"CREATE TABLE lsh_items (id int, v embedding({dims}))")
        c.execute("INSERT INTO lsh_items SELECT id, v::real[]::embedding FROM items")
    c.execute("VACUUM ANALYZE lsh_items")
    c.execute("VACUUM ANALYZE items")
    builds = {"lsh": (float("nan"),) * 2, "hnsw": (float("nan"),) * 2}
    lsh_with = f" WITH ({a.lsh_with})" if a.lsh_with else ""
    for name, sql in (("lsh", f"CREATE INDEX IF NOT EXISTS lsh_items_idx ON lsh_items USING lsh (v {lsh_ops}){lsh_with}"),
                      ("hnsw", f"CREATE INDEX IF NOT EXISTS items_hnsw_idx ON items USING hnsw (v {hnsw_ops}) "
                               "WITH (m = 16, ef_construction = 64)")):
        cpu0, t0 = backend_cpu_ns(pid), time.perf_counter()
        c.execute(sql)
        if not a.reuse_indexes and not (a.reuse_hnsw and name == "hnsw"):
            builds[name] = (time.perf_counter() - t0, (backend_cpu_ns(pid) - cpu0) / 1e9)
    if a.ivfflat:
        # ivfflat on its own copy of `items`, so that the planner cannot pick hnsw instead.
        if not c.execute("SELECT to_regclass('ivf_items')").fetchone()[0]:
            c.execute("CREATE TABLE ivf_items AS SELECT id, v FROM items")
            c.execute("VACUUM ANALYZE ivf_items")
        if c.execute("SELECT to_regclass('items_ivf_idx')").fetchone()[0]:
            print("ivfflat: items_ivf_idx reused", flush=True)
        else:
            cpu0, t0 = backend_cpu_ns(pid), time.perf_counter()
            c.execute(f"CREATE INDEX items_ivf_idx ON ivf_items USING ivfflat (v {hnsw_ops}) WITH (lists = {a.ivfflat})")
            wall, cpu = time.perf_counter() - t0, (backend_cpu_ns(pid) - cpu0) / 1e9
            mb = c.execute("SELECT pg_relation_size('items_ivf_idx')").fetchone()[0] / 2**20
            print(f"build: ivfflat lists {a.ivfflat} {wall:.1f} s (CPU {cpu:.1f} s), {mb:.0f} MB", flush=True)
    sizes = {n: c.execute(f"SELECT pg_relation_size('{i}')").fetchone()[0] / 2**20
             for n, i in (("lsh", "lsh_items_idx"), ("hnsw", "items_hnsw_idx"), ("raw", "items"))}
    print(f"build: lsh {builds['lsh'][0]:.1f} s (CPU {builds['lsh'][1]:.1f} s), hnsw {builds['hnsw'][0]:.1f} s "
          f"(CPU {builds['hnsw'][1]:.1f} s): lsh / hnsw = {builds['lsh'][1] / builds['hnsw'][1]:.3f} (CPU); "
          f"size lsh {sizes['lsh']:.0f} MB, hnsw {sizes['hnsw']:.0f} MB, raw vectors "
          f"{rows * dims * 4 / 2**20:.0f} MB", flush=True)
    if a.prewarm:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        pages = c.execute("SELECT pg_prewarm('lsh_items_idx'), pg_prewarm('items_hnsw_idx')").fetchone()
        print(f"prewarmed: lsh {pages[0]} pages, hnsw {pages[1]} pages", flush=True)
        if a.ivfflat:
            c.execute("SELECT pg_prewarm('items_ivf_idx')")
    info = c.execute("SELECT bits, tables, sketch_bits, superbuckets FROM lsh_index_info('lsh_items_idx')").fetchone()
    print(f"lsh layout{lsh_with or ' (defaults)'}: bits {info[0]}, tables {info[1]}, sketch bits {info[2]}, "
          f"superbuckets {info[3]}", flush=True)

    qs = [(qid, v) for qid, v in c.execute("SELECT qid, v::text FROM queries ORDER BY qid LIMIT %s",
                                           (a.queries,))]
    c.execute("SET enable_indexscan = off")
    truth = {qid: {r[0] for r in c.execute(f"SELECT id FROM items ORDER BY v {op} %s::vector LIMIT 10", (v,))}
             for qid, v in qs}
    c.execute("RESET enable_indexscan")
    c.execute("SET enable_seqscan = off")
    print(f"exact top-10 of {len(qs)} queries computed; timing {a.rounds} rounds", flush=True)

    def run(sql, setting, v):
        c.execute(setting)
        cpu0, t0 = backend_cpu_ns(pid), time.perf_counter()
        got = [r[0] for r in c.execute(sql, (v,))]
        return got, (time.perf_counter() - t0) * 1e3, (backend_cpu_ns(pid) - cpu0) / 1e6

    lsh_sql = f"SELECT id FROM lsh_items ORDER BY v {op} %s::embedding LIMIT 10"
    hnsw_sql = f"SELECT id FROM items ORDER BY v {op} %s::vector LIMIT 10"
    for sql in (lsh_sql, hnsw_sql):
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + sql, (qs[0][1],)))
        assert "Index Scan" in plan, plan
    probes = [int(x) for x in a.probes.split(",")] if a.ivfflat else []
    ivf_sql = f"SELECT id FROM ivf_items ORDER BY v {op} %s::vector LIMIT 10"
    if a.ivfflat:
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + ivf_sql, (qs[0][1],)))
        assert "items_ivf_idx" in plan, plan
    if a.reuse_indexes or a.reuse_hnsw:
        for qid, v in qs[:5]:  # bring the reused indexes into shared buffers
            c.execute(lsh_sql, (v,)).fetchall()
            c.execute(hnsw_sql, (v,)).fetchall()
    reranks = a.rerank.split(",")
    efs = [int(x) for x in a.ef.split(",")]
    res = {("lsh", r): [] for r in reranks} | {("hnsw", e): [] for e in efs} | {("ivf", p): [] for p in probes}
    for _ in range(a.rounds):
        for qid, v in qs:
            # Each query at every setting of both methods, alternating lsh and hnsw.
            for i in range(max(len(reranks), len(efs), len(probes))):
                pairs = []
                if i < len(reranks):
                    r, _, f = reranks[i].partition("@")
                    pairs.append((("lsh", reranks[i]), lsh_sql,
                                  f"SET lsh.rerank = {int(r)}; SET lsh.scan_fraction = {float(f or 0)}"))
                if i < len(efs):
                    pairs.append((("hnsw", efs[i]), hnsw_sql, f"SET hnsw.ef_search = {efs[i]}"))
                if i < len(probes):
                    pairs.append((("ivf", probes[i]), ivf_sql, f"SET ivfflat.probes = {probes[i]}"))
                for key, sql, setting in pairs:
                    got, ms, cpu = run(sql, setting, v)
                    res[key].append((len(truth[qid] & set(got)) / 10, ms, cpu))
    curve = {}
    rows_out = []
    print(f"{'method':<6} {'setting':<16} {'recall@10':>9} {'median ms':>10} {'median CPU ms':>14} {'QPS/CPU':>8}")
    for (m, s), xs in res.items():
        rec = statistics.mean(x[0] for x in xs)
        ms = statistics.median(x[1] for x in xs)
        cpu = statistics.median(x[2] for x in xs)
        curve.setdefault(m, []).append((rec, 1e3 / cpu))
        label = {"lsh": f"rerank={s}", "hnsw": f"ef_search={s}", "ivf": f"probes={s}"}[m]
        print(f"{m:<6} {label:<16} {rec:>9.3f} {ms:>10.2f} {cpu:>14.2f} {1e3 / cpu:>8.0f}")
        rows_out.append({"method": {"lsh": "lsh", "hnsw": "pgvector hnsw", "ivf": "pgvector ivfflat"}[m],
                         "setting": label, "recall": rec, "qps": 1e3 / ms, "qps_cpu": 1e3 / cpu})
        build_cpu = builds.get(m, (float("nan"),) * 2)[1]
        if build_cpu == build_cpu:  # measured in this run (not NaN)
            rows_out[-1]["build_s"] = build_cpu
    if a.json:
        doc = {"rows": rows, "dims": dims, "queries": a.queries, "data_desc": a.dbname,
               "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%d"), "results": rows_out}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    hn = sorted(curve["hnsw"])
    for rec, qps in sorted(curve["lsh"]):
        lo = [p for p in hn if p[0] <= rec]
        hi = [p for p in hn if p[0] >= rec]
        if not lo or not hi:
            print(f"lsh recall {rec:.3f}: outside hnsw's measured recall range")
            continue
        (r0, q0), (r1, q1) = lo[-1], hi[0]
        h = q0 if r1 == r0 else q0 + (q1 - q0) * (rec - r0) / (r1 - r0)
        print(f"lsh recall {rec:.3f}: {qps:.0f} QPS/CPU vs hnsw ~{h:.0f} at that recall -> {qps / h:.2f}")


if __name__ == "__main__":
    main()
