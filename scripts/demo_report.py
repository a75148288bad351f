#!/usr/bin/env python3
"""The Python half of scripts/demo.sh: loads a photo folder into PostgreSQL, embeds it there with
img_embed_batch (progress bar), builds the lsh index, runs the similarity queries and writes the report:
a contact sheet PNG (each query photo beside its k results with distances) and an HTML page with the SQL
that ran and its timings.

    demo_report.py --dsn DSN load --images DIR [--held-out FILE ...]
    demo_report.py --dsn DSN embed [--model NAME] [--batch 32]
    demo_report.py --dsn DSN index
    demo_report.py --dsn DSN search --query FILE [--query FILE ...] [--k 5] [--out demo-out]
    demo_report.py --dsn DSN all --images DIR [--query FILE ...] ...   (the four steps in a row)
    demo_report.py held-out --images DIR        (prints the default query photos, one a line)

Rows are keyed by (path, sha256 of the content): re-running loads, embeds and indexes only what changed,
and rows whose file left the folder (or became a held-out query) are deleted, so the table mirrors the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TABLE = "demo_photos"
INDEX = "demo_photos_emb_lsh"
TIMINGS = ".demo_timings.json"  # in the output folder: timings of load/embed/index for the HTML page

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS pg_imgsim;
CREATE TABLE IF NOT EXISTS {TABLE} (
    id      bigserial PRIMARY KEY,
    path    text NOT NULL,           -- path of the file (relative to the images folder)
    sha256  text NOT NULL,           -- hex SHA-256 of the content
    label   text,                    -- first folder under the images folder (e.g. the gcompris class)
    photo   bytea NOT NULL,          -- the file itself, any format img_embed reads
    emb     embedding,               -- img_embed(photo), filled by the batch step
    error   text,                    -- why img_embed refused the photo, if it did
    model   text,                    -- the model that made emb
    UNIQUE (path, sha256)
);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS emb embedding;  -- after a DROP EXTENSION ... CASCADE
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS model text;
"""


def log(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stderr.isatty() else f"[demo] {msg}", file=sys.stderr, flush=True)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def default_held_out(root: Path, n_flat: int = 3) -> list[Path]:
    """The query photos held out of the collection when --query is not given: the first photo of each
    top-level folder (the gcompris classes), or n_flat photos spread over a folder without subfolders."""
    files = list_images(root)
    groups: dict[str, list[Path]] = {}
    for p in files:
        rel = p.relative_to(root)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", []).append(p)
    if len(groups) > 1 and "" not in groups:
        return [g[0] for _, g in sorted(groups.items()) if len(g) > 1][:8]
    if len(files) < 2 * n_flat:
        return files[:1] if len(files) > 1 else []
    step = len(files) / n_flat
    return [files[int(i * step)] for i in range(n_flat)]


def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """A terminal progress bar: rows done / total, rate, time left. Plain lines when not on a terminal."""

    def __init__(self, total: int, what: str, unit: str = "photos"):
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_line = -1.0

    def update(self, n: int) -> None:
        self.done += n
        el = time.monotonic() - self.t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        frac = self.done / self.total if self.total else 1.0
        if self.tty:
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            sys.stderr.write(
                f"\r{self.what} [{bar}] {self.done}/{self.total} {self.unit} {frac * 100:5.1f}% "
                f"{rate:6.1f}/s  elapsed {fmt_duration(el)}  left {fmt_duration(eta)} "
            )
            sys.stderr.flush()
        elif frac - self.last_line >= 0.1 or self.done == self.total:
            self.last_line = frac
            print(f"{self.what}: {self.done}/{self.total} {self.unit} ({frac * 100:.0f}%), {rate:.1f}/s, "
                  f"left {fmt_duration(eta)}", file=sys.stderr, flush=True)

    def close(self) -> float:
        el = time.monotonic() - self.t0
        if self.tty:
            sys.stderr.write("\n")
        return el


def load_timings(out: Path) -> dict:
    try:
        return json.loads((out / TIMINGS).read_text())
    except (OSError, ValueError):
        return {}


def save_timings(out: Path, t: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / TIMINGS).write_text(json.dumps(t, indent=1))


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


# ----------------------------------------------------------------------------------------------- load
def cmd_load(conn: psycopg.Connection, images: Path, held_out: list[Path], timings: dict) -> None:
    t0 = time.monotonic()
    conn.execute(SCHEMA)
    held = {p.resolve() for p in held_out}
    files = [p for p in list_images(images) if p.resolve() not in held]
    if not files:
        raise SystemExit(f"no photos ({', '.join(sorted(IMAGE_EXT))}) under {images}")
    want: dict[tuple[str, str], tuple[Path, str]] = {}
    for p in files:
        rel = p.relative_to(images)
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        label = rel.parts[0] if len(rel.parts) > 1 else ""
        want[(str(rel), sha)] = (p, label)
    have = {(r[0], r[1]) for r in conn.execute(f"SELECT path, sha256 FROM {TABLE}")}
    stale = have - set(want)
    new = [k for k in want if k not in have]
    if stale:
        with conn.cursor() as cur:
            cur.executemany(f"DELETE FROM {TABLE} WHERE path = %s AND sha256 = %s", list(stale))
    if new:
        prog = Progress(len(new), "load ", "photos")
        prog.update(0)
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {TABLE} (path, sha256, label, photo) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "text", "text", "bytea"])
                for key in new:
                    p, label = want[key]
                    cp.write_row((key[0], key[1], label, p.read_bytes()))
                    prog.update(1)
        prog.close()
    if new or stale:
        conn.execute(f"ANALYZE {TABLE}")
    total = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    el = time.monotonic() - t0
    log(f"photos: {total} in {TABLE} ({len(new)} new, {len(stale)} removed, {len(want) - len(new)} unchanged); "
        f"{len(held_out)} held out as queries")
    timings["load"] = {"seconds": el, "new": len(new), "removed": len(stale), "total": total,
                       "images": str(images), "sql": f"COPY {TABLE} (path, sha256, label, photo) FROM STDIN "
                       "(FORMAT BINARY)  -- only new (path, sha256) pairs"}


# ---------------------------------------------------------------------------------------------- embed
EMBED_SQL = f"""WITH b AS (
  SELECT array_agg(id ORDER BY id) AS ids, array_agg(photo ORDER BY id) AS photos
  FROM {TABLE} WHERE id = ANY(%(ids)s))
UPDATE {TABLE} p SET emb = x.emb, error = NULL, model = %(model)s
FROM b, unnest(b.ids, img_embed_batch(b.photos, %(model)s)) AS x(id, emb)
WHERE p.id = x.id"""


def cmd_embed(conn: psycopg.Connection, model: str, batch: int, timings: dict) -> None:
    # another model (another dimension) than the rows were embedded with: embed everything again
    redo = conn.execute(f"UPDATE {TABLE} SET emb = NULL, error = NULL WHERE (emb IS NOT NULL OR error IS NOT NULL) "
                        "AND model IS DISTINCT FROM %s", [model]).rowcount
    if redo:
        log(f"embeddings: model changed to {model}: embedding all {redo} photos again, index rebuilt after")
        conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    todo = [r[0] for r in conn.execute(f"SELECT id FROM {TABLE} WHERE emb IS NULL AND error IS NULL ORDER BY id")]
    if not todo:
        log("embeddings: all photos already embedded")
        timings.setdefault("embed", {})["skipped_rerun"] = True
        return
    prog = Progress(len(todo), "embed", "photos")
    prog.update(0)
    failed = 0
    for i in range(0, len(todo), batch):
        ids = todo[i: i + batch]
        try:
            with conn.transaction():
                conn.execute(EMBED_SQL, {"ids": ids, "model": model})
        except psycopg.Error:
            # one photo the decoder refuses fails the whole batch: embed this chunk one by one instead
            for one in ids:
                try:
                    with conn.transaction():
                        conn.execute(f"UPDATE {TABLE} SET emb = img_embed(photo, %s), model = %s WHERE id = %s",
                                     [model, model, one])
                except psycopg.Error as e:
                    failed += 1
                    conn.execute(f"UPDATE {TABLE} SET error = %s, model = %s WHERE id = %s",
                                 [str(e).strip()[:500], model, one])
        prog.update(len(ids))
    el = prog.close()
    conn.execute(f"ANALYZE {TABLE} (emb)")
    log(f"embeddings: {len(todo) - failed} photos in {el:.1f} s ({(len(todo) - failed) / el:.1f} photos/s, "
        f"batches of {batch}, model {model})" + (f"; {failed} refused (see {TABLE}.error)" if failed else ""))
    timings["embed"] = {"seconds": el, "photos": len(todo), "failed": failed, "batch": batch, "model": model,
                        "sql": EMBED_SQL.replace("%(ids)s", "<ids of the chunk>").replace("%(model)s", repr(model))}


# ---------------------------------------------------------------------------------------------- index
def cmd_index(conn: psycopg.Connection, timings: dict) -> None:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [INDEX]).fetchone()[0]
    sql = f"CREATE INDEX {INDEX} ON {TABLE} USING lsh (emb embedding_l2_ops)"
    if exists:
        log(f"index: {INDEX} already there (new rows went into it as they were embedded)")
        timings.setdefault("index", {"sql": sql, "seconds": None})["skipped_rerun"] = True
        return
    t0 = time.monotonic()
    conn.execute(sql)
    el = time.monotonic() - t0
    size = conn.execute("SELECT pg_size_pretty(pg_relation_size(%s::regclass))", [INDEX]).fetchone()[0]
    log(f"index: {INDEX} built in {el:.2f} s ({size})")
    timings["index"] = {"sql": sql, "seconds": el, "size": size}


# --------------------------------------------------------------------------------------------- search
# (SELECT img_embed(...)) makes the query photo's embedding an InitPlan: computed once per query, then a
# constant for the index scan (and for a sequential scan's sort, which would otherwise call img_embed per row
# if the function is not folded at plan time).
SEARCH_SQL = f"""SELECT id, path, label, emb <-> (SELECT img_embed(%(q)s)) AS distance
FROM {TABLE}
ORDER BY emb <-> (SELECT img_embed(%(q)s))
LIMIT %(k)s"""


@dataclass
class Hit:
    id: int
    path: str
    label: str
    distance: float
    photo: bytes = b""


@dataclass
class QueryResult:
    file: Path
    hits: list[Hit]
    seconds: float
    exact_ids: list[int] = field(default_factory=list)
    exact_seconds: float = 0.0
    plan: str = ""


def run_queries(conn: psycopg.Connection, queries: list[Path], k: int, use_index: bool) -> list[QueryResult]:
    results = []
    for qf in queries:
        qb = qf.read_bytes()
        params = {"q": qb, "k": k}
        with conn.transaction():
            if use_index:
                # a demo-sized table is cheaper to scan than to search through an index: make the planner
                # take the lsh index anyway, to show it (on large tables it picks the index by itself)
                conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + SEARCH_SQL, params))
            t0 = time.monotonic()
            rows = conn.execute(SEARCH_SQL, params).fetchall()
            el = time.monotonic() - t0
        hits = [Hit(*r) for r in rows]
        # the exact answer (sequential scan) to compare the index's with
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            t1 = time.monotonic()
            exact = [r[0] for r in conn.execute(SEARCH_SQL, params)]
            el_exact = time.monotonic() - t1
        if hits:
            photos = dict(conn.execute(f"SELECT id, photo FROM {TABLE} WHERE id = ANY(%s)", [[h.id for h in hits]]))
            for h in hits:
                h.photo = bytes(photos[h.id])
        results.append(QueryResult(qf, hits, el, exact, el_exact, plan))
        same = len(set(exact) & {h.id for h in hits})
        log(f"query {qf.name}: {len(hits)} results in {el * 1000:.1f} ms "
            f"({same}/{len(exact)} of the exact top {k}); nearest: "
            + ", ".join(f"{Path(h.path).name} ({h.distance:.3f})" for h in hits[:3]))
    return results


# --------------------------------------------------------------------------------------------- report
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support
        return ImageFont.load_default()


def _thumb(data: bytes, size: int):
    from PIL import Image, ImageOps

    try:
        im = Image.open(io.BytesIO(data))
        im = ImageOps.exif_transpose(im).convert("RGB")
    except Exception:  # noqa: BLE001 - a photo Pillow cannot read still gets a (grey) cell
        return Image.new("RGB", (size, size), (90, 90, 90))
    im.thumbnail((size, size))
    cell = Image.new("RGB", (size, size), (255, 255, 255))
    cell.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return cell


def _short(name: str, n: int = 25) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def contact_sheet(results: list[QueryResult], k: int, path: Path, thumb: int = 160) -> None:
    from PIL import Image, ImageDraw

    pad, text_h, gap = 10, 36, 24
    cols = 1 + k
    w = pad + cols * (thumb + pad) + gap
    row_h = thumb + text_h + pad
    title_h = 34
    h = title_h + pad + len(results) * row_h
    sheet = Image.new("RGB", (w, h), (245, 245, 245))
    d = ImageDraw.Draw(sheet)
    f_title, f = _font(18), _font(12)
    d.text((pad, 8), f"pg_imgsim: ORDER BY emb <-> img_embed(query) LIMIT {k}", fill=(0, 0, 0), font=f_title)
    for row, res in enumerate(results):
        y = title_h + pad + row * row_h
        q = _thumb(res.file.read_bytes(), thumb)
        sheet.paste(q, (pad, y))
        d.rectangle([pad - 3, y - 3, pad + thumb + 2, y + thumb + 2], outline=(200, 30, 30), width=3)
        d.text((pad, y + thumb + 4), "query", fill=(200, 30, 30), font=f)
        d.text((pad, y + thumb + 18), _short(res.file.name), fill=(0, 0, 0), font=f)
        for i, hit in enumerate(res.hits):
            x = pad + (i + 1) * (thumb + pad) + gap
            sheet.paste(_thumb(hit.photo, thumb), (x, y))
            d.text((x, y + thumb + 4), f"#{i + 1}  d = {hit.distance:.3f}", fill=(0, 0, 0), font=f)
            name = (f"{hit.label}/" if hit.label else "") + Path(hit.path).name
            d.text((x, y + thumb + 18), _short(name), fill=(80, 80, 80), font=f)
    sheet.save(path)


def html_page(results: list[QueryResult], k: int, timings: dict, meta: dict, path: Path) -> None:
    e = html.escape
    rows = []
    for step, label in (("load", "Load photos"), ("embed", "Embed in the database (batch path)"),
                        ("index", "Build the lsh index")):
        t = timings.get(step)
        if not t:
            continue
        secs = t.get("seconds")
        extra = ""
        if step == "load":
            extra = f"{t['total']} photos in the table ({t['new']} new, {t['removed']} removed)"
        elif step == "embed" and "photos" in t:
            extra = (f"{t['photos']} photos, {t['photos'] / t['seconds']:.1f} photos/s, batches of {t['batch']}, "
                     f"model {e(t['model'])}" + (f", {t['failed']} refused" if t.get("failed") else ""))
        elif step == "index" and t.get("size"):
            extra = f"index size {e(t['size'])}"
        if t.get("skipped_rerun"):
            extra = (extra + "; " if extra else "") + "nothing to do on this run (figure from the run that did it)"
        rows.append(f"<tr><td>{e(label)}</td><td><pre>{e(t.get('sql', ''))}</pre></td>"
                    f"<td>{'' if secs is None else f'{secs:.2f} s'}</td><td>{extra}</td></tr>")
    qrows = []
    for res in results:
        same = len(set(res.exact_ids) & {h.id for h in res.hits})
        hits = "<br>".join(f"#{i + 1} {e(h.path)} &mdash; {h.distance:.4f}" for i, h in enumerate(res.hits))
        qrows.append(
            f"<tr><td>{e(str(res.file))}</td><td>{res.seconds * 1000:.1f} ms</td>"
            f"<td>{res.exact_seconds * 1000:.1f} ms</td><td>{same}/{len(res.exact_ids)}</td><td>{hits}</td></tr>")
    plan = results[0].plan if results else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pg_imgsim demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }}
pre {{ margin: 0; font-size: 0.9em; }} img {{ max-width: 100%; border: 1px solid #ccc; }}
</style></head><body>
<h1>pg_imgsim demo</h1>
<p>{meta.get('photos', '?')} photos from <code>{e(str(meta.get('images', '')))}</code>, database
<code>{e(meta.get('where', ''))}</code>, PostgreSQL {e(meta.get('server_version', ''))}, pg_imgsim
{e(meta.get('ext_version', ''))}, model <code>{e(meta.get('model', ''))}</code>, {meta.get('dims', '?')}-dimension
embeddings{', lsh.probes = ' + e(str(meta['probes'])) if meta.get('probes') else ''}. Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>
<h2>Contact sheet</h2>
<p>Each row: the query photo (red frame), then its {k} nearest photos with their L2 distances.</p>
<img src="contact_sheet.png" alt="contact sheet">
<h2>The query</h2>
<pre>{e(SEARCH_SQL.replace('%(q)s', '$1').replace('%(k)s', str(k)))}</pre>
<p>$1 is the query photo's bytes (bytea). {e(meta.get('index_note', ''))}</p>
<table><tr><th>query photo</th><th>time (lsh index)</th><th>time (exact scan)</th>
<th>same as exact top {k}</th><th>results</th></tr>
{''.join(qrows)}
</table>
<h3>Plan (first query)</h3><pre>{e(plan)}</pre>
<h2>Setup steps</h2>
<table><tr><th>step</th><th>SQL</th><th>time</th><th></th></tr>
{''.join(rows)}
</table>
</body></html>
"""
    path.write_text(page)


def cmd_search(conn: psycopg.Connection, queries: list[Path], k: int, out: Path, timings: dict, model: str,
               images: str, where: str, use_index: bool) -> None:
    if not queries:
        raise SystemExit("no query photo: give --query FILE")
    out.mkdir(parents=True, exist_ok=True)
    has_index = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [INDEX]).fetchone()[0]
    results = run_queries(conn, queries, k, use_index and has_index)
    probes = None
    try:
        with conn.transaction():
            probes = conn.execute("SHOW lsh.probes").fetchone()[0]
    except psycopg.Error:
        pass
    meta = {
        "photos": conn.execute(f"SELECT count(*) FROM {TABLE} WHERE emb IS NOT NULL").fetchone()[0],
        "images": images, "where": where, "model": model, "probes": probes,
        "server_version": conn.execute("SHOW server_version").fetchone()[0],
        "ext_version": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'").fetchone()[0],
        "dims": conn.execute(f"SELECT dims(emb) FROM {TABLE} WHERE emb IS NOT NULL LIMIT 1").fetchone()[0],
        "index_note": ("The table is small, so the demo sets enable_seqscan = off in the query's transaction to "
                       "make the planner use the lsh index; the exact column is the same query with index scans "
                       "off.") if use_index and has_index else "No lsh index was used (sequential scan).",
    }
    contact_sheet(results, k, out / "contact_sheet.png")
    html_page(results, k, timings, meta, out / "index.html")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""), help="libpq connection string or URL")
    ap.add_argument("step", choices=["load", "embed", "index", "search", "all", "held-out"])
    ap.add_argument("--images", type=Path)
    ap.add_argument("--held-out", type=Path, action="append", default=None,
                    help="photos kept out of the table (default with 'all': a few of --images)")
    ap.add_argument("--query", type=Path, action="append", default=[])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--where", default="", help="how to describe the database in the report")
    ap.add_argument("--no-force-index", action="store_true", help="let the planner choose (no enable_seqscan=off)")
    a = ap.parse_args()
    if a.step == "held-out":
        for p in default_held_out(a.images.resolve()):
            print(p)
        return
    images = a.images.resolve() if a.images else None
    if images is None and a.step in ("load", "all"):
        ap.error("--images is needed")
    if a.held_out is None:
        a.held_out = default_held_out(images) if (images and a.step == "all" and not a.query) else []
    queries = a.query or a.held_out
    timings = load_timings(a.out)
    with connect(a.dsn) as conn:
        if a.step in ("load", "all"):
            cmd_load(conn, images, a.held_out, timings)
        if a.step in ("embed", "all"):
            cmd_embed(conn, a.model, a.batch, timings)
        if a.step in ("index", "all"):
            cmd_index(conn, timings)
        save_timings(a.out, timings)
        if a.step in ("search", "all"):
            cmd_search(conn, [q.resolve() for q in queries], a.k, a.out, timings, a.model,
                       str(images or timings.get("load", {}).get("images", "")), a.where, not a.no_force_index)


if __name__ == "__main__":
    main()
