"""psycopg 3 against pg_imgsim: text and binary protocol, numpy, COPY (binary and text), arrays, errors;
img_embed / img_embed_batch when the server has them (SKIP otherwise).

Connection: libpq environment variables (PGHOST, PGPORT, ...) or DATABASE_URL. Prints PASS/FAIL/SKIP lines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import MODEL, Report, connect_retry, gcompris_split  # noqa: E402
from pg_imgsim_psycopg import Embedding, from_binary, register_embedding, to_binary  # noqa: E402

r = Report("psycopg")
f32 = np.float32


def as_f32_list(values) -> list[float]:
    return [float(f32(x)) for x in values]


def connect() -> psycopg.Connection:
    conn = psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
    return conn


conn = connect_retry(connect)
register_embedding(conn)
conn.execute("DROP TABLE IF EXISTS py_t")
conn.execute("CREATE TABLE py_t (id int PRIMARY KEY, v embedding(3), w embedding)")


def text_literal_roundtrip():
    lit = "[1,2.5,-3e-2]"
    with conn.cursor(binary=False) as cur:
        got = cur.execute("SELECT %s::embedding", [lit]).fetchone()[0]
        txt = cur.execute("SELECT %s::embedding::text", [lit]).fetchone()[0]
    if got != as_f32_list([1, 2.5, -3e-2]):
        return f"text load gave {got}"
    if txt != "[1,2.5,-0.03]":
        return f"server text form {txt!r}"
    # the text form the server prints, parsed again, gives the very same float4 values
    again = conn.execute("SELECT %s::embedding", [txt]).fetchone()[0]
    return None if again == got else f"re-parse gave {again}"


r.run("pgvector-style text literal [1,2.5,-3e-2] reads back unchanged (text protocol)", text_literal_roundtrip)

EXTREMES = [1.0, -0.0, 1.5e-7, 3.4028235e38, -1.1754944e-38, 0.1, 123456.789]


def binary_roundtrip():
    with conn.cursor(binary=True) as cur:
        got = cur.execute("SELECT %b::embedding", [Embedding(EXTREMES)]).fetchone()[0]
    return None if got == as_f32_list(EXTREMES) else f"got {got}"


r.run("binary protocol: dump and load Embedding, float4 values bit-exact", binary_roundtrip)


def text_dump_binary_load():
    with conn.cursor(binary=True) as cur:
        got = cur.execute("SELECT %t::embedding", [Embedding(EXTREMES)]).fetchone()[0]
    with conn.cursor(binary=False) as cur:
        got2 = cur.execute("SELECT %b::embedding", [Embedding(EXTREMES)]).fetchone()[0]
    want = as_f32_list(EXTREMES)
    return None if got == want and got2 == want else f"text->binary {got}, binary->text {got2}"


r.run("text dump + binary load, binary dump + text load agree", text_dump_binary_load)


def send_matches_ours():
    v = Embedding([1, 2.5, -0.03, 7e-3])
    sent = conn.execute("SELECT embedding_send(%s)", [v]).fetchone()[0]
    if bytes(sent) != to_binary(v):
        return f"server {bytes(sent).hex()} vs client {to_binary(v).hex()}"
    return None if from_binary(sent) == as_f32_list(v) else "from_binary mismatch"


r.run("binary layout (int16 dims, int16 0, float4 BE) equals embedding_send", send_matches_ours)


def insert_select_table():
    rows = [(1, Embedding([1, 2, 3]), Embedding([0.5])), (2, Embedding([-1.5e-7, 3.4e38, 0]), None), (3, None, None)]
    with conn.cursor(binary=True) as cur:
        cur.executemany("INSERT INTO py_t VALUES (%s, %s, %s)", rows)
        got = cur.execute("SELECT id, v, w FROM py_t ORDER BY id").fetchall()
    with conn.cursor(binary=False) as cur:
        got_t = cur.execute("SELECT id, v, w FROM py_t ORDER BY id").fetchall()
    want = [(i, None if v is None else as_f32_list(v), None if w is None else as_f32_list(w)) for i, v, w in rows]
    if got != want:
        return f"binary fetch {got}"
    return None if got_t == want else f"text fetch {got_t}"


r.run("executemany insert; NULLs; fetch in binary and text agree", insert_select_table)


def typmod_error():
    try:
        conn.execute("INSERT INTO py_t (id, v) VALUES (10, %s)", [Embedding([1, 2, 3, 4])])
    except psycopg.Error as e:
        return None if "dimension" in str(e) else f"unexpected error {e}"
    return "4 values went into embedding(3)"


r.run("embedding(3) rejects a 4-dimension value", typmod_error)


def numpy_roundtrip():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(1280).astype(np.float32)
    with conn.cursor(binary=True) as cur:
        register_embedding(cur, numpy=True)
        got = cur.execute("SELECT %s::embedding", [a]).fetchone()[0]
    with conn.cursor(binary=False) as cur:
        register_embedding(cur, numpy=True)
        got_t = cur.execute("SELECT %s::embedding", [a.astype(np.float64)]).fetchone()[0]
    if not (isinstance(got, np.ndarray) and got.dtype == np.float32 and np.array_equal(got, a)):
        return "binary numpy round trip differs"
    return None if np.array_equal(got_t, a) else "text numpy round trip differs"


r.run("numpy float32/float64 arrays in, numpy float32 out (1280 dims)", numpy_roundtrip)


def distances_match_numpy():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(64).astype(np.float32) for _ in range(2))
    l2, cos, nip = conn.execute(
        "SELECT %s <-> %s, %s <=> %s, %s <#> %s", [Embedding(a), Embedding(b)] * 3
    ).fetchone()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = (np.linalg.norm(a64 - b64), 1 - a64 @ b64 / np.linalg.norm(a64) / np.linalg.norm(b64), -(a64 @ b64))
    got = (l2, cos, nip)
    return None if np.allclose(got, want, rtol=1e-5, atol=1e-6) else f"got {got}, want {want}"


r.run("<-> <=> <#> equal numpy's L2, cosine distance, negative inner product", distances_match_numpy)


def array_of_embeddings():
    with conn.cursor(binary=True) as cur:
        got = cur.execute("SELECT ARRAY[%s, %s, NULL]::embedding[]", [Embedding([1, 2]), Embedding([3.5])]).fetchone()[0]
    with conn.cursor(binary=False) as cur:
        got_t = cur.execute("SELECT ARRAY['[1,2]', '[3.5]', NULL]::embedding[]").fetchone()[0]
    want = [[1.0, 2.0], [3.5], None]
    return None if got == want and got_t == want else f"binary {got}, text {got_t}"


r.run("embedding[] loads as a list of lists (binary and text)", array_of_embeddings)

N_COPY = 500


def copy_binary():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((N_COPY, 16)).astype(np.float32)
    conn.execute("DROP TABLE IF EXISTS py_copy")
    conn.execute("CREATE TABLE py_copy (id int, v embedding(16))")
    with conn.cursor() as cur:
        with cur.copy("COPY py_copy (id, v) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "embedding"])
            for i, row in enumerate(data):
                cp.write_row((i, Embedding(row)))
        out = []
        with cur.copy("COPY (SELECT id, v FROM py_copy ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "embedding"])
            out = list(cp.rows())
    if len(out) != N_COPY:
        return f"{len(out)} rows came back"
    bad = [i for i, v in out if v != [float(x) for x in data[i]]]
    if bad:
        return f"rows {bad[:5]} differ"
    # and the server saw the same values
    s = conn.execute("SELECT sum(v) FROM py_copy").fetchone()[0]
    return None if np.allclose(s, data.astype(np.float64).sum(0), rtol=1e-4, atol=1e-3) else "server sum differs"


r.run(f"COPY FROM/TO STDIN (FORMAT BINARY), {N_COPY} rows bit-exact", copy_binary)


def copy_text():
    conn.execute("DROP TABLE IF EXISTS py_copy_t")
    conn.execute("CREATE TABLE py_copy_t (id int, v embedding)")
    with conn.cursor() as cur:
        with cur.copy("COPY py_copy_t FROM STDIN") as cp:
            cp.write("1\t[1,2.5,-3e-2]\n2\t\\N\n")
        with cur.copy("COPY py_copy_t TO STDOUT") as cp:
            text = b"".join(bytes(b) for b in cp).decode()
    return None if text == "1\t[1,2.5,-0.03]\n2\t\\N\n" else f"COPY TO gave {text!r}"


r.run("COPY text format with pgvector-style literals", copy_text)

# ---------------------------------------------------------------- img_embed / img_embed_batch (guarded)
has_embed = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed')").fetchone()[0]
has_batch = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed_batch')").fetchone()[0]
_, held = gcompris_split(2)
photos = [p.read_bytes() for _, p in held[:4]]

if not has_embed:
    r.skip("img_embed(bytea) through psycopg", "function img_embed not in this server yet")
elif not photos:
    r.fail("img_embed(bytea) through psycopg", "no photos (scripts/install-deps.sh makes .cache/data/gcompris)")
else:

    def img_embed_binary():
        with conn.cursor(binary=True) as cur:
            register_embedding(cur, numpy=True)
            a = cur.execute("SELECT img_embed(%s)", [photos[0]]).fetchone()[0]
            b = cur.execute("SELECT img_embed(%s, %s)", [photos[0], MODEL]).fetchone()[0]
        if not (a.ndim == 1 and a.size > 0 and np.all(np.isfinite(a))):
            return f"bad embedding shape/values {a.shape}"
        return None if np.allclose(a, b, rtol=1e-5, atol=1e-6) else "default model differs from explicit model"

    r.run(f"img_embed(bytea) and img_embed(bytea, '{MODEL}') as numpy (binary protocol)", img_embed_binary)

if not has_batch:
    r.skip("img_embed_batch(bytea[], model) through psycopg", "function img_embed_batch not in this server yet")
elif photos:

    def img_embed_batch():
        with conn.cursor(binary=True) as cur:
            batch = cur.execute("SELECT img_embed_batch(%s, %s)", [photos, MODEL]).fetchone()[0]
            single = [cur.execute("SELECT img_embed(%s, %s)", [p, MODEL]).fetchone()[0] for p in photos]
        if len(batch) != len(photos):
            return f"{len(batch)} embeddings for {len(photos)} photos"
        worst = max(float(np.max(np.abs(np.subtract(x, y)))) for x, y in zip(batch, single))
        return None if worst < 1e-3 else f"batch differs from one-by-one by {worst}"

    r.run("img_embed_batch(bytea[], model) = img_embed one by one (embedding[] over binary)", img_embed_batch)

conn.execute("DROP TABLE IF EXISTS py_t, py_copy, py_copy_t")
conn.close()
r.exit()
