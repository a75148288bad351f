#!/usr/bin/env python3
"""Build a real-image embedding set (>= 100k rows) for index benchmarks.

Rows are EfficientNet-Lite0 embeddings (1280-d, as the model outputs them, not normalised)
of crops of real photographs shipped in Debian packages. Every crop is embedded exactly like
a whole image by scripts/reference_embed.py (decode_rgb -> resize_crop -> to_tensor ->
onnxruntime), so any row can be reproduced by saving the crop as PNG and running the
reference pipeline on it.

Command (about 20 min on 2 cores at 85-150 rows/s under nice 19 beside a compile; a re-run
skips finished shards):

  nice -n 19 .cache/venv/bin/python scripts/make_image_set.py \\
      --out .cache/data/images --rows 100000 --seed 20261130

Sources (real photographs only; drawings, renders, logos, charts, test patterns, tiny images
and stereo / near-duplicate twins are left out by the whitelists below, then any two sources
whose whole-photo embeddings have cosine >= --dup-cos are de-duplicated automatically):
  gcompris      .cache/data/gcompris/<class>/*  (made by scripts/gcompris_photos.py; class kept)
  opencv-doc, mate-backgrounds, lomiri-wallpapers-16.04, lomiri-wallpapers-20.04,
  plasma-workspace-wallpapers, python3-skimage   (apt-get download + dpkg-deb -x into
  .cache/debs/<deb name>/ when not already there; no installation)
Each source is decoded with reference_embed.decode_rgb (EXIF, alpha on white, RGB), shrunk
(Lanczos) so that its shorter side is at most --max-side (1024) and saved as a PNG under
.cache/data/photos/sources/; crops are taken from that normalised PNG.

Crops per source: scales 1.0, 0.8, 0.65, 0.5, 0.4, 0.3 of the photo's width and height
(aspect kept); at scale s a g x g grid of positions with g = floor((1 - s) / 0.08) + 1
(1, 3, 5, 7, 8, 9), each plain and horizontally flipped: 458 candidates. Scale 1.0 is the
photo itself. Flat crops are dropped: those whose visible part (the centred square the network
sees) has a grey-level std below --min-std (2.0 on 0..255), i.e. blank white backgrounds of
object photos or empty sky, which would otherwise form a cluster of near-identical vectors
(cosine > 0.95 to a plain white image).

Split: --holdout-frac (2.5 %) of the sources, drawn at random with --seed, are held out. The
base set holds only the other sources: per source the photo itself (plain and flipped) plus a
seeded random sample of its other candidates, K = ceil(rows / sources) per source. Queries
are --queries (300) crops drawn at random (seed, kept in draw order) among all candidates of
the held-out sources, so a query's neighbours are other photos' crops, never its own near-duplicates.
Base rows are shuffled (seed) at the end; base_rows.npy tells each row's crop.

Outputs in --out:
  base.npy        float32 [N,1280] C-order        queries.npy   float32 [Q,1280]
  base_rows.npy   int32 [N,7]: source id, scale index, x, y, w, h, flip (pixels of the
                  normalised source PNG); queries_rows.npy the same for the queries
  meta.json       sources (id, package, class, original path/size, normalised path/size,
                  held out, rows), counts, seed, parameters, command, timings, sanity figures
  progress.log    rows done, rate, ETA
  shards/         checkpoints named by a hash of the plan: <base key>_base_NNN.npy (10k rows, in
                  source order), <query key>_queries.npy; a re-run embeds only missing shards,
                  and when the plan changed (other options), crops already in the previous
                  base.npy / queries.npy (same source, same normalised size, same model) are
                  copied instead of re-embedded (--no-reuse to turn off)

Sanity check at the end (also in meta.json): for 20 queries the exact cosine top-10 in base
(mean top-1 / top-10 cosine, same-gcompris-class fraction of the top-10 for gcompris queries),
and 5 random base rows re-embedded through reference_embed.preprocess on a PNG of the crop
with batch 1 (max abs diff must be < 1e-4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import reference_embed as ref  # noqa: E402

SCALES = (1.0, 0.8, 0.65, 0.5, 0.4, 0.3)
GRID_STRIDE = 0.08

# Debian package -> (deb file glob, list of (relative path inside the package, short name)).
# Whitelists picked by eye from contact sheets of every image in the packages (bookworm).
OPENCV = "usr/share/doc/opencv-doc/examples/"
OPENCV_PHOTOS = [
    "alphamat/input_images/plant.jpg", "data/aero1.jpg", "data/aloeL.jpg", "data/apple.jpg",
    "data/baboon.jpg", "data/basketball1.png", "data/board.jpg", "data/box_in_scene.png",
    "data/building.jpg", "data/butterfly.jpg", "data/chicky_512.png", "data/ela_original.jpg",
    "data/fruits.jpg", "data/graf1.png", "data/home.jpg", "data/left.jpg", "data/left01.jpg",
    "data/leuvenA.jpg", "data/licenseplate_motion.jpg", "data/messi5.jpg", "data/orange.jpg",
    "data/rubberwhale1.png", "data/smarties.png", "data/squirrel_cls.jpg", "data/stuff.jpg",
    "data/sudoku.png", "dnn_superres/butterfly.png", "hfs/data/000.jpg", "hfs/data/001.jpg",
    "hfs/data/002.jpg", "reg/home.png",
] + [f"text/scenetext0{i}.jpg" for i in range(1, 7)] + [
    f"text/scenetext_segmented_word0{i}.jpg" for i in range(1, 6)]
MATE = "usr/share/backgrounds/mate/nature/"
MATE_PHOTOS = ["Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg",
               "GreenMeadow.jpg", "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg",
               "Wood.jpg", "YellowFlower.jpg"]
LOMIRI = "usr/share/backgrounds/"
LOMIRI16_PHOTOS = [
    "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
    "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg"]
LOMIRI20_PHOTOS = ["Kleiber_by_Lukas_Baubkus.jpg"]
PLASMA = "usr/share/wallpapers/"
PLASMA_PHOTOS = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Honeywave", "Path", "summer_1am"]  # largest file in images/
SKIMAGE = "usr/lib/python3/dist-packages/skimage/data/"
SKIMAGE_PHOTOS = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
                  "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
                  "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg"]
# ukui-wallpapers holds only digital art: not used.

PACKAGES = ["opencv-doc", "mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
            "plasma-workspace-wallpapers", "python3-skimage"]


def log(msg: str, fh=None):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def extracted(pkg: str, debs: Path) -> Path:
    """Directory where the package's .deb is extracted (download + extract when missing)."""
    hits = sorted(debs.glob(f"{pkg}_*.deb"))
    if not hits:
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
        hits = sorted(debs.glob(f"{pkg}_*.deb"))
    deb = hits[-1]
    d = debs / deb.name[:-4]
    if not d.is_dir():
        tmp = debs / (deb.name[:-4] + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(d)
    return d


def list_sources(gcompris: Path, debs: Path) -> list[dict]:
    """Every candidate source photo: id, package, class ('' outside gcompris), path."""
    out = []
    for rel, cls in ref.list_images(gcompris):
        out.append({"id": f"gcompris/{rel}", "package": "gcompris-qt-data", "class": cls,
                    "path": str(gcompris / rel)})
    debs.mkdir(parents=True, exist_ok=True)
    dirs = {p: extracted(p, debs) for p in PACKAGES}
    plan = [("opencv-doc", OPENCV, OPENCV_PHOTOS), ("mate-backgrounds", MATE, MATE_PHOTOS),
            ("lomiri-wallpapers-16.04", LOMIRI, LOMIRI16_PHOTOS),
            ("lomiri-wallpapers-20.04", LOMIRI, LOMIRI20_PHOTOS),
            ("python3-skimage", SKIMAGE, SKIMAGE_PHOTOS)]
    for pkg, prefix, names in plan:
        for n in names:
            p = dirs[pkg] / prefix / n
            if not p.is_file():
                raise SystemExit(f"missing {p}")
            out.append({"id": f"{pkg}/{n}", "package": pkg, "class": "", "path": str(p)})
    for n in PLASMA_PHOTOS:
        imgs = sorted((dirs["plasma-workspace-wallpapers"] / PLASMA / n / "contents/images").iterdir())
        best = max(imgs, key=lambda p: (Image.open(p).size[0] * Image.open(p).size[1], p.name))
        out.append({"id": f"plasma-workspace-wallpapers/{n}", "package": "plasma-workspace-wallpapers",
                    "class": "", "path": str(best)})
    return out


def normalise_sources(sources: list[dict], photos: Path, max_side: int, min_side: int) -> list[dict]:
    """decode_rgb, shrink to shorter side <= max_side, save PNG; drop duplicates by bytes and small."""
    seen, kept = {}, []
    for s in sources:
        raw = Path(s["path"]).read_bytes()
        h = hashlib.sha1(raw).hexdigest()
        if h in seen:
            print(f"  skip {s['id']}: same bytes as {seen[h]}")
            continue
        seen[h] = s["id"]
        dst = photos / (s["id"].rsplit(".", 1)[0] + ".png")
        with Image.open(s["path"]) as im0:
            s["orig_size"] = list(ref.ImageOps.exif_transpose(im0).size)
        if min(s["orig_size"]) < min_side:
            print(f"  skip {s['id']}: {s['orig_size']} shorter side < {min_side}")
            continue
        if not dst.is_file():
            img = ref.decode_rgb(s["path"])
            w, h2 = img.size
            if min(w, h2) > max_side:
                f = max_side / min(w, h2)
                img = img.resize((max(1, round(w * f)), max(1, round(h2 * f))), Image.Resampling.LANCZOS)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".tmp.png")
            img.save(tmp, compress_level=1)
            tmp.rename(dst)
        with Image.open(dst) as im:
            s["size"] = list(im.size)
        s["norm_path"] = str(dst)
        kept.append(s)
    return kept


def candidates(w: int, h: int) -> list[tuple]:
    """(scale index, x, y, cw, ch, flip) for every crop of a w x h source; first two = whole photo."""
    out = []
    for si, s in enumerate(SCALES):
        cw, ch = max(1, int(round(w * s))), max(1, int(round(h * s)))
        g = int(math.floor((1.0 - s) / GRID_STRIDE + 1e-9)) + 1
        xs = sorted({int(round(v)) for v in np.linspace(0, w - cw, g)})
        ys = sorted({int(round(v)) for v in np.linspace(0, h - ch, g)})
        for y in ys:
            for x in xs:
                for flip in (0, 1):
                    out.append((si, x, y, cw, ch, flip))
    return out


def visible_std(gray: np.ndarray, c) -> float:
    """Grey-level std of the part of crop c = (scale, x, y, w, h, flip) that the network sees
    (the centred square of side min(w, h) * input / resize_shorter), sampled on a <= ~128 grid."""
    _, x, y, w, h, _ = c
    side = min(w, h) * 224.0 / 256.0
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    step = max(1, int(side) // 128)
    return float(gray[y0:int(cy + side / 2) + 1:step, x0:int(cx + side / 2) + 1:step].std())


def usable_candidates(s: dict, min_std: float) -> tuple[list, int]:
    """candidates() of a source minus flat crops (visible grey std < min_std: blank background,
    empty sky); the whole photo (first two) is always kept. Returns (kept, number dropped)."""
    cand = candidates(*s["size"])
    if min_std <= 0:
        return cand, 0
    gray = np.asarray(ref.decode_rgb(s["norm_path"]).convert("L"), dtype=np.float32)
    kept = cand[:2] + [c for c in cand[2:] if visible_std(gray, c) >= min_std]
    return kept, len(cand) - len(kept)


def load_previous(out: Path, model: str, sources: list[dict]) -> dict:
    """Vectors of an earlier run's base.npy / queries.npy, keyed by crop, for rows whose source
    (id and normalised size) and model are unchanged: a changed plan re-embeds only new crops."""
    try:
        prev = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    if prev.get("model") != model:
        return {}
    now = {s["id"]: s["size"] for s in sources}
    psrc = [(p["id"] if now.get(p["id"]) == p["size"] else None) for p in prev["sources"]]
    table = {}
    for vec_f, rows_f in (("base.npy", "base_rows.npy"), ("queries.npy", "queries_rows.npy")):
        if not (out / vec_f).is_file() or not (out / rows_f).is_file():
            continue
        vecs, rows = np.load(out / vec_f, mmap_mode="r"), np.load(out / rows_f)
        for j, r in enumerate(rows):
            sid = psrc[int(r[0])]
            if sid is not None:
                table[(sid,) + tuple(int(v) for v in r[1:])] = (vecs, j)
    return table


def crop_image(src: Image.Image, row) -> Image.Image:
    _, x, y, cw, ch, flip = (int(v) for v in row)
    img = src.crop((x, y, x + cw, y + ch))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def embed_rows(sess, meta, sources, rows: np.ndarray, batch: int, progress=None) -> np.ndarray:
    """rows: int32 [n,7] (source id, scale, x, y, w, h, flip), grouped by source for speed.

    A producer thread decodes / crops / preprocesses (Pillow releases the GIL) while the
    main thread runs onnxruntime."""
    q: queue.Queue = queue.Queue(maxsize=4)
    err = []

    def produce():
        try:
            cur_id, cur = -1, None
            for i in range(0, len(rows), batch):
                xs = []
                for r in rows[i:i + batch]:
                    if r[0] != cur_id:
                        cur_id, cur = int(r[0]), ref.decode_rgb(sources[int(r[0])]["norm_path"])
                        cur.load()
                    xs.append(ref.to_tensor(ref.resize_crop(crop_image(cur, r[1:]), meta), meta))
                q.put(np.stack(xs))
        except BaseException as e:  # surface in the main thread
            err.append(e)
        q.put(None)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    outs, done = [], 0
    while True:
        x = q.get()
        if x is None:
            break
        outs.append(sess.run([meta["output_name"]], {meta["input_name"]: x})[0].astype(np.float32))
        done += len(x)
        if progress:
            progress(done)
    t.join()
    if err:
        raise err[0]
    return np.concatenate(outs) if outs else np.zeros((0, int(meta["dims"])), np.float32)


def save_atomic(path: Path, arr: np.ndarray):
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / ".cache/data/images"))
    ap.add_argument("--model-dir", default=str(REPO / ".cache/models"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--gcompris", default=str(REPO / ".cache/data/gcompris"))
    ap.add_argument("--debs", default=str(REPO / ".cache/debs"))
    ap.add_argument("--photos", default=str(REPO / ".cache/data/photos/sources"))
    ap.add_argument("--rows", type=int, default=100_000, help="minimum base rows")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--holdout-frac", type=float, default=0.025)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--max-side", type=int, default=1024, help="shrink sources to this shorter side")
    ap.add_argument("--min-side", type=int, default=200, help="drop sources with a shorter side below")
    ap.add_argument("--dup-cos", type=float, default=0.95, help="drop a source this close to an earlier one")
    ap.add_argument("--min-std", type=float, default=2.0,
                    help="drop crops whose visible part has a grey-level std below this (flat)")
    ap.add_argument("--no-reuse", action="store_true",
                    help="do not take vectors of unchanged crops from an earlier base.npy/queries.npy")
    ap.add_argument("--shard", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args(argv)

    t_start = time.time()
    out = Path(args.out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    plog = open(out / "progress.log", "a")
    log(f"start: {' '.join(sys.argv)}", plog)
    meta = ref.load_model_meta(args.model_dir, args.model)
    sess = ref.make_session(Path(args.model_dir), args.model, args.threads)

    # 1. sources
    sources = normalise_sources(list_sources(Path(args.gcompris), Path(args.debs)), Path(args.photos),
                                args.max_side, args.min_side)
    log(f"{len(sources)} candidate sources after byte de-duplication and size filter", plog)
    whole = np.array([[i, 0, 0, 0, s["size"][0], s["size"][1], 0] for i, s in enumerate(sources)], np.int32)
    dup_cache = out / "shards" / "whole_photos.npy"
    ids_key = hashlib.sha1(json.dumps([s["id"] for s in sources]).encode()).hexdigest()[:10]
    dup_cache = dup_cache.with_name(f"whole_photos_{ids_key}.npy")
    if dup_cache.is_file():
        ew = np.load(dup_cache)
    else:
        ew = embed_rows(sess, meta, sources, whole, args.batch)
        save_atomic(dup_cache, ew)
    en = ew / np.maximum(np.linalg.norm(ew, axis=1, keepdims=True), 1e-12)
    sim = en @ en.T
    drop, dups = set(), []
    for i in range(len(sources)):
        if i in drop:
            continue
        for j in range(i + 1, len(sources)):
            if j not in drop and sim[i, j] >= args.dup_cos:
                drop.add(j)
                dups.append([sources[j]["id"], sources[i]["id"], round(float(sim[i, j]), 4)])
    for d in dups:
        log(f"  near-duplicate dropped: {d[0]} ~ {d[1]} (cos {d[2]})", plog)
    sources = [s for i, s in enumerate(sources) if i not in drop]
    by_pkg = {}
    for s in sources:
        by_pkg[s["package"]] = by_pkg.get(s["package"], 0) + 1
    log(f"{len(sources)} sources: {by_pkg}", plog)

    # 2. split and crop plan
    rng = np.random.default_rng(args.seed)
    n_hold = max(1, int(round(args.holdout_frac * len(sources))))
    held = set(int(i) for i in rng.choice(len(sources), n_hold, replace=False))
    base_ids = [i for i in range(len(sources)) if i not in held]
    cands, flat_dropped = [], 0
    for s in sources:
        kept, nd = usable_candidates(s, args.min_std)
        cands.append(kept)
        s["flat_crops_dropped"] = nd
        flat_dropped += nd
    log(f"flat crops dropped (visible grey std < {args.min_std}): {flat_dropped}", plog)
    n_cand = {i: len(cands[i]) for i in base_ids}
    k = math.ceil(args.rows / len(base_ids))
    while sum(min(k, n) for n in n_cand.values()) < args.rows:  # small sources have fewer crops
        if k > max(n_cand.values()):
            raise SystemExit(f"only {sum(n_cand.values())} candidate crops for --rows {args.rows}")
        k += 1
    base_rows, q_pool = [], []
    for i, s in enumerate(sources):
        s["held_out"] = i in held
        cand = cands[i]
        if i in held:
            q_pool += [(i,) + c for c in cand]
            s["rows"] = 0
            continue
        srng = np.random.default_rng([args.seed, zlib.crc32(s["id"].encode())])
        rest = np.sort(srng.choice(len(cand) - 2, min(k, len(cand)) - 2, replace=False) + 2)
        pick = [0, 1] + [int(v) for v in rest]
        base_rows += [(i,) + cand[p] for p in pick]
        s["rows"] = len(pick)
    base_rows = np.array(base_rows, np.int32)
    q_pool = np.array(q_pool, np.int32)
    qsel = rng.choice(len(q_pool), min(args.queries, len(q_pool)), replace=False)  # random order
    q_rows = q_pool[qsel]
    perm = rng.permutation(len(base_rows))

    def key(rows):
        return hashlib.sha1(json.dumps({
            "ids": [s["id"] for s in sources], "sizes": [s["size"] for s in sources],
            "model": args.model, "rows": hashlib.sha1(rows.tobytes()).hexdigest()}).encode()).hexdigest()[:10]

    plan_key, q_key = key(base_rows), key(q_rows)
    log(f"plan {plan_key}/{q_key}: {len(base_rows)} base rows ({k}/source over {len(base_ids)} sources), "
        f"{len(q_rows)} queries from {n_hold} held-out sources ({len(q_pool)} candidates)", plog)

    # 3. embed, 10k-row shards
    t_embed = time.time()
    jobs = [(f"{q_key}_queries", q_rows)] + [
        (f"{plan_key}_base_{j:03d}", base_rows[a:a + args.shard]) for j, a in enumerate(range(0, len(base_rows), args.shard))]
    total = sum(len(r) for _, r in jobs)
    done_rows = sum(len(r) for name, r in jobs if (out / "shards" / f"{name}.npy").is_file())
    prev = {} if args.no_reuse or done_rows == total else load_previous(out, args.model, sources)
    reused = 0
    new_rows, t0, last = 0, time.time(), [0.0]
    todo_of = {}  # job -> indices of rows that must be embedded (not in a shard, not reusable)
    for name, rows in jobs:
        if not (out / "shards" / f"{name}.npy").is_file():
            todo_of[name] = [j for j, r in enumerate(rows)
                             if (sources[int(r[0])]["id"],) + tuple(int(v) for v in r[1:]) not in prev]
    total_todo = sum(len(t) for t in todo_of.values())
    log(f"{total_todo} rows to embed ({total - done_rows - total_todo} reused from the previous outputs, "
        f"{done_rows} in finished shards)", plog)
    for name, rows in jobs:
        path = out / "shards" / f"{name}.npy"
        if path.is_file():
            continue
        todo = todo_of[name]

        def progress(n, todo=todo):
            now = time.time()
            if now - last[0] >= 30 or n == len(todo):
                last[0] = now
                d = new_rows + n
                rate = d / max(now - t0, 1e-9)
                log(f"{name}: {n}/{len(todo)} embedded, total {d}/{total_todo}  "
                    f"{rate:.1f} rows/s  ETA {(total_todo - d) / max(rate, 1e-9) / 60:.1f} min", plog)

        emb = np.zeros((len(rows), int(meta["dims"])), np.float32)
        for j, r in enumerate(rows):
            hit = prev.get((sources[int(r[0])]["id"],) + tuple(int(v) for v in r[1:]))
            if hit is not None:
                emb[j] = hit[0][hit[1]]
        reused += len(rows) - len(todo)
        if todo:
            emb[todo] = embed_rows(sess, meta, sources, rows[todo], args.batch, progress)
        log(f"{name}: {len(rows)} rows ({len(rows) - len(todo)} reused from the previous outputs)", plog)
        save_atomic(path, emb)
        new_rows += len(todo)
    embed_s = time.time() - t_embed

    # 4. assemble
    queries = np.load(out / "shards" / f"{jobs[0][0]}.npy")
    base = np.concatenate([np.load(out / "shards" / f"{n}.npy") for n, _ in jobs[1:]])
    assert base.shape == (len(base_rows), int(meta["dims"])) and base.dtype == np.float32
    base = np.ascontiguousarray(base[perm])
    base_rows_out = base_rows[perm]
    save_atomic(out / "base.npy", base)
    save_atomic(out / "base_rows.npy", base_rows_out)
    save_atomic(out / "queries.npy", np.ascontiguousarray(queries, np.float32))
    save_atomic(out / "queries_rows.npy", q_rows)
    log(f"wrote base.npy {base.shape}, queries.npy {queries.shape}", plog)

    # 5. sanity: exact cosine top-10 for 20 queries; 5 rows through the reference per-image path
    bn = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    qn = queries[:20] / np.maximum(np.linalg.norm(queries[:20], axis=1, keepdims=True), 1e-12)
    sims = qn @ bn.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    top1 = float(np.mean(sims[np.arange(len(top)), top[:, 0]]))
    top10 = float(np.mean(np.take_along_axis(sims, top, axis=1)))
    same, nq_g, examples = [], 0, []
    for qi in range(len(top)):
        qs = sources[int(q_rows[qi, 0])]
        nb = [sources[int(base_rows_out[j, 0])] for j in top[qi]]
        if qs["class"]:
            nq_g += 1
            same.append(np.mean([n["class"] == qs["class"] for n in nb]))
        examples.append({"query": qs["id"], "top3": [n["id"] for n in nb[:3]],
                         "cos": [round(float(sims[qi, j]), 4) for j in top[qi][:3]]})
    same_frac = float(np.mean(same)) if same else None
    log(f"sanity: 20 queries, mean top-1 cos {top1:.4f}, mean top-10 cos {top10:.4f}; "
        f"{nq_g} gcompris queries, same-class fraction of top-10 {same_frac}", plog)
    crng = np.random.default_rng(args.seed + 1)
    diffs = []
    with tempfile.TemporaryDirectory() as td:
        for j in crng.choice(len(base_rows_out), 5, replace=False):
            r = base_rows_out[j]
            p = Path(td) / f"row{j}.png"
            crop_image(ref.decode_rgb(sources[int(r[0])]["norm_path"]), r[1:]).save(p)
            x = ref.preprocess(p, meta)[None]
            e = sess.run([meta["output_name"]], {meta["input_name"]: x})[0][0]
            diffs.append(float(np.max(np.abs(e - base[j]))))
    log(f"sanity: 5 rows re-embedded via reference_embed.preprocess, max abs diff {max(diffs):.3g}", plog)
    if max(diffs) >= 1e-4:
        raise SystemExit("re-embedding check FAILED")

    # 6. meta
    counts = {}
    for s in sources:
        c = counts.setdefault(s["package"], {"sources": 0, "held_out": 0, "base_rows": 0})
        c["sources"] += 1
        c["held_out"] += int(s["held_out"])
        c["base_rows"] += s["rows"]
    info = {
        "format": 1,
        "model": args.model, "dims": int(meta["dims"]), "normalised": False,
        "command": "nice -n 19 " + " ".join([Path(sys.executable).name] + sys.argv)
        if os.nice(0) >= 19 else " ".join([Path(sys.executable).name] + sys.argv),
        "seed": args.seed, "plan": {"base": plan_key, "queries": q_key},
        "params": {k2: v for k2, v in vars(args).items() if k2 not in ("out",)},
        "scales": SCALES, "grid_stride": GRID_STRIDE, "per_source_rows": k,
        "n_base": int(base.shape[0]), "n_queries": int(queries.shape[0]),
        "n_sources": len(sources), "n_held_out": n_hold, "counts_by_package": counts,
        "near_duplicates_dropped": dups, "flat_crops_dropped": flat_dropped,
        "min_std": args.min_std,
        "rows_files": {"base": "base_rows.npy", "queries": "queries_rows.npy",
                       "columns": ["source", "scale_index", "x", "y", "w", "h", "flip"]},
        "base_row_source": "base_rows.npy[:, 0] (index into sources); base rows are shuffled",
        "sources": [{k2: s[k2] for k2 in ("id", "package", "class", "path", "orig_size", "norm_path",
                                          "size", "held_out", "rows", "flat_crops_dropped")}
                    for s in sources],
        "sanity": {"queries": 20, "mean_top1_cos": top1, "mean_top10_cos": top10,
                   "gcompris_queries": nq_g, "same_class_frac_top10": same_frac,
                   "examples": examples, "reembed_max_abs_diff": diffs},
        "timing_s": {"embed": round(embed_s, 1), "total_this_run": round(time.time() - t_start, 1),
                     "embedded_this_run_rows": new_rows, "reused_rows": reused, "started": time.strftime(
                         "%Y-%m-%dT%H:%M:%S", time.localtime(t_start))},
        "earlier_runs": [],
    }
    old = out / "meta.json"
    if old.is_file():  # keep the timings of earlier runs (shards they embedded are reused)
        prev = json.loads(old.read_text())
        info["earlier_runs"] = prev.get("earlier_runs", []) + [
            {"plan": prev.get("plan"), "command": prev.get("command"), "timing_s": prev.get("timing_s")}]
    (out / "meta.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"done in {time.time() - t_start:.0f} s (embedding {embed_s:.0f} s, {new_rows} rows this run)", plog)


if __name__ == "__main__":
    sys.exit(main())
