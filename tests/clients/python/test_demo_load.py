"""scripts/demo_report.py's loading step against a real server: rows keyed by (path, SHA-256), re-running adds
nothing, a changed file replaces its row, a removed file or a held-out query photo leaves the table; the default
held-out choice. Needs only the embedding type (no img_embed). Prints PASS/FAIL lines.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import PHOTOS, ROOT, Report, connect_retry  # noqa: E402

spec = importlib.util.spec_from_file_location("demo_report", ROOT / "scripts" / "demo_report.py")
demo = importlib.util.module_from_spec(spec)
sys.modules["demo_report"] = demo  # dataclasses look their module up
spec.loader.exec_module(demo)

r = Report("demo load")
tmp = Path(tempfile.mkdtemp(prefix="pg_imgsim_demo_load."))
src = sorted(PHOTOS.glob("*/*.webp"))
classes = sorted({p.parent.name for p in src})
for c in classes[:3]:  # 3 classes x 4 photos
    (tmp / c).mkdir()
    for p in sorted(PHOTOS.glob(f"{c}/*.webp"))[:4]:
        shutil.copy(p, tmp / c / p.name)
(tmp / classes[0] / "nested").mkdir()
shutil.copy(sorted(PHOTOS.glob(f"{classes[0]}/*.webp"))[5], tmp / classes[0] / "nested" / "deep.webp")
(tmp / "notes.txt").write_text("not a photo")


def connect() -> psycopg.Connection:
    conn = psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
    return conn


conn = connect_retry(connect)
conn.execute(f"DROP TABLE IF EXISTS {demo.TABLE}")


def rows() -> list[tuple[str, str, str]]:
    return conn.execute(f"SELECT path, sha256, label FROM {demo.TABLE} ORDER BY path").fetchall()


def count() -> int:
    return conn.execute(f"SELECT count(*) FROM {demo.TABLE}").fetchone()[0]


held = demo.default_held_out(tmp)
r.check("default held-out queries: the first photo of each top-level folder",
        [p.relative_to(tmp).as_posix() for p in held]
        == [f"{c}/{sorted(x.name for x in (tmp / c).glob('*.webp'))[0]}" for c in classes[:3]],
        f"got {held}")

t: dict = {}
demo.cmd_load(conn, tmp, held, t)
got = rows()
r.check("first load: every photo (recursively, webp only) except the held-out ones",
        len(got) == 13 - 3 and any(p.endswith("nested/deep.webp") for p, _, _ in got)
        and not any(p.endswith(".txt") for p, _, _ in got), f"{len(got)} rows: {got}")
r.check("labels are the top-level folder names", {lab for _, _, lab in got} == set(classes[:3]), str(got))
r.check("timings record 10 new rows", t["load"]["new"] == 10 and t["load"]["total"] == 10, str(t))

demo.cmd_load(conn, tmp, held, t)
r.check("re-running adds no rows", count() == 10 and t["load"]["new"] == 0 and t["load"]["removed"] == 0, str(t))

victim = tmp / classes[1] / sorted(x.name for x in (tmp / classes[1]).glob("*.webp"))[2]
victim.write_bytes(victim.read_bytes() + b"\0")
gone = tmp / classes[2] / sorted(x.name for x in (tmp / classes[2]).glob("*.webp"))[1]
gone.unlink()
demo.cmd_load(conn, tmp, held, t)
shas = {p: s for p, s, _ in rows()}
rel = victim.relative_to(tmp).as_posix()
r.check("a changed file replaces its row (new hash), a deleted file's row goes",
        count() == 9 and shas.get(rel) == hashlib.sha256(victim.read_bytes()).hexdigest()
        and gone.relative_to(tmp).as_posix() not in shas and t["load"]["new"] == 1 and t["load"]["removed"] == 2,
        f"{count()} rows, {t['load']}")

demo.cmd_load(conn, tmp, [], t)
r.check("a photo no longer held out is loaded", count() == 12 and t["load"]["new"] == 3, str(t["load"]))

flat = Path(tempfile.mkdtemp(prefix="pg_imgsim_demo_flat."))
for p in src[:12]:
    shutil.copy(p, flat / p.name)
fh = demo.default_held_out(flat)
r.check("flat folder: 3 held-out photos spread over it", len(fh) == 3 and len(set(fh)) == 3, str(fh))

# ---- the embedding step: with the real img_embed_batch when the server has it, else with stand-ins (functions
# in a schema of their own, found through search_path) that run through the same SQL
real = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed_batch')").fetchone()[0]
if not real:
    conn.execute("""
CREATE SCHEMA IF NOT EXISTS demo_fake;
CREATE OR REPLACE FUNCTION demo_fake.img_embed(b bytea, model text DEFAULT 'm1') RETURNS embedding
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN
  IF get_byte(b, 0) = 0 THEN RAISE EXCEPTION 'cannot decode this image'; END IF;
  RETURN (CASE WHEN model = 'm2' THEN ARRAY[1, length(b), get_byte(b, 30)]
          ELSE ARRAY[length(b), get_byte(b, 30)] END)::float8[]::embedding;
END $$;
CREATE OR REPLACE FUNCTION demo_fake.img_embed_batch(b bytea[], model text) RETURNS embedding[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT array_agg(demo_fake.img_embed(x, model) ORDER BY o) FROM unnest(b) WITH ORDINALITY u(x, o) $$;
""")
    conn.execute("SET search_path = demo_fake, public")
m1 = "efficientnet_lite0" if real else "m1"
# a folder with one file the decoder refuses (the stand-in refuses a leading zero byte; so does the real one)
tmp_bad = Path(tempfile.mkdtemp(prefix="pg_imgsim_demo_bad."))
(tmp_bad / "x").mkdir()
(tmp_bad / "x" / "broken.png").write_bytes(b"\0not a png at all")
for p in sorted(tmp.rglob("*.webp"))[:5]:
    shutil.copy(p, tmp_bad / "x" / p.name)
demo.cmd_load(conn, tmp_bad, [], t)
demo.cmd_embed(conn, m1, 4, t)
st = conn.execute(f"SELECT count(emb), count(error), count(*) FROM {demo.TABLE}").fetchone()
r.check("embed in batches: good photos embedded, the undecodable one gets an error, the run goes on",
        st == (5, 1, 6), f"(embedded, errors, rows) = {st}")
demo.cmd_embed(conn, m1, 4, t)
r.check("embed again: nothing to do", t["embed"].get("skipped_rerun") is True, str(t["embed"]))
has_lsh = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'lsh')").fetchone()[0]
if has_lsh:
    demo.cmd_index(conn, t)
    r.check("index step builds the lsh index", conn.execute("SELECT to_regclass(%s)", [demo.INDEX]).fetchone()[0]
            is not None, "no index")
if real:
    r.skip("embed with another model re-embeds everything", "needs a second model")
else:
    demo.cmd_embed(conn, "m2", 4, t)
    dims = conn.execute(f"SELECT DISTINCT dims(emb) FROM {demo.TABLE} WHERE emb IS NOT NULL").fetchall()
    idx = conn.execute("SELECT to_regclass(%s)", [demo.INDEX]).fetchone()[0]
    r.check("embed with another model re-embeds everything (one dimension left, index dropped for a rebuild)",
            dims == [(3,)] and t["embed"]["photos"] == 6 and idx is None, f"dims {dims}, {t['embed']}, index {idx}")
shutil.rmtree(tmp_bad)

conn.execute(f"DROP TABLE IF EXISTS {demo.TABLE}")
conn.execute("DROP SCHEMA IF EXISTS demo_fake CASCADE")
conn.close()
shutil.rmtree(tmp)
shutil.rmtree(flat)
r.exit()
