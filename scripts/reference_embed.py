#!/usr/bin/env python3
"""Reference image-embedding pipeline for pg_imgsim (Pillow + onnxruntime, CPU).

This is the behaviour the Rust pipeline (src/pipeline) must reproduce:

1. decode with Pillow; apply the EXIF orientation; images with alpha (RGBA, LA, P with
   transparency) are composited on white; everything is converted to 8-bit RGB;
2. torchvision-equivalent ``Resize(resize_shorter)`` on a PIL image: the shorter side becomes
   ``resize_shorter``, the longer side ``int(resize_shorter * long / short)`` (truncated), Pillow
   bilinear resampling (which is antialiased: the filter support scales with the reduction);
3. torchvision ``CenterCrop``: top = int(round((h - ch) / 2)), left = int(round((w - cw) / 2))
   (Python round: halves go to the even integer);
   with ``crop: "none"`` the image is resized straight to input_width x input_height instead;
4. float32 (p - mean) / std per channel on 0..255 values, channel order per the json, NCHW;
5. onnxruntime CPU inference -> ``embedding`` [N, dims].

Modes:
  reference_embed.py --model-dir .cache/models --images .cache/data/gcompris [--out emb.npy]
      embeds every image under the class folders, prints leave-one-out precision@1/5/10 with exact
      cosine similarity, optionally saves emb.npy (float32 [N,dims]) + emb.json (file list, classes)
      and, with --save-inputs x.npy, the preprocessed inputs (float32 [N,3,H,W]) for parity tests.
  reference_embed.py --model-dir .cache/models --images DIR --bench
      prints images/s for decode+preprocess and for inference (1 thread and default threads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def load_model_meta(model_dir: str | Path, name: str) -> dict:
    meta = json.loads((Path(model_dir) / f"{name}.json").read_text())
    if meta.get("format") != 1:
        raise SystemExit(f"{name}.json: unsupported format {meta.get('format')}")
    return meta


def decode_rgb(path_or_file) -> Image.Image:
    """Pillow decode, EXIF transpose, alpha composited on white, 8-bit RGB."""
    img = Image.open(path_or_file)
    img = ImageOps.exif_transpose(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def resize_crop(img: Image.Image, meta: dict) -> Image.Image:
    out_w, out_h = int(meta["input_width"]), int(meta["input_height"])
    if meta.get("crop", "center") == "none":
        return img.resize((out_w, out_h), Image.Resampling.BILINEAR)
    short_target = int(meta["resize_shorter"])
    w, h = img.size
    if w <= h:
        new_w, new_h = short_target, int(short_target * h / w)
    else:
        new_w, new_h = int(short_target * w / h), short_target
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if new_w < out_w or new_h < out_h:
        raise ValueError(f"resized image {new_w}x{new_h} smaller than the {out_w}x{out_h} crop")
    top = int(round((new_h - out_h) / 2.0))
    left = int(round((new_w - out_w) / 2.0))
    return img.crop((left, top, left + out_w, top + out_h))


def to_tensor(img: Image.Image, meta: dict) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)  # HWC, RGB
    if meta.get("channel_order", "rgb") == "bgr":
        a = a[:, :, ::-1]
    mean = np.asarray(meta["normalize"]["mean"], dtype=np.float32)
    std = np.asarray(meta["normalize"]["std"], dtype=np.float32)
    a = (a - mean) / std
    if meta.get("layout", "nchw") != "nchw":
        raise SystemExit(f"unsupported layout {meta.get('layout')}")
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def preprocess(path_or_file, meta: dict) -> np.ndarray:
    """One image -> float32 [3,H,W] network input."""
    return to_tensor(resize_crop(decode_rgb(path_or_file), meta), meta)


def list_images(root: Path):
    """(relative path, class) for every image; class = first folder under root ('' if flat)."""
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() in IMAGE_EXTS:
                rel = Path(dirpath, fn).relative_to(root)
                cls = rel.parts[0] if len(rel.parts) > 1 else ""
                items.append((str(rel), cls))
    return items


def make_session(model_dir: Path, name: str, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_dir / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])


def embed_batches(sess, meta, x: np.ndarray, batch: int) -> np.ndarray:
    outs = []
    for i in range(0, len(x), batch):
        outs.append(sess.run([meta["output_name"]], {meta["input_name"]: x[i:i + batch]})[0])
    return np.concatenate(outs).astype(np.float32)


def loo_precision(emb: np.ndarray, labels: list[str], ks=(1, 5, 10)) -> dict:
    """Leave-one-out precision@k with exact cosine similarity (ties broken by index)."""
    n = len(labels)
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.asarray(labels)
    order = np.argsort(-sim, axis=1, kind="stable")
    res = {}
    for k in ks:
        kk = min(k, n - 1)
        hits = (lab[order[:, :kk]] == lab[:, None]).sum(axis=1) / kk
        res[k] = float(hits.mean())
    return res


def bench(model_dir: Path, name: str, meta: dict, root: Path, files: list, rounds: int, batch: int):
    paths = [root / f for f, _ in files]
    # decode + preprocess (single Python thread)
    t0 = time.perf_counter()
    n = 0
    while True:
        xs = [preprocess(p, meta) for p in paths]
        n += len(xs)
        if time.perf_counter() - t0 > 2.0 or n >= rounds * len(paths):
            break
    dt = time.perf_counter() - t0
    print(f"decode+preprocess (Pillow, 1 thread): {n / dt:8.1f} images/s  ({n} images, {dt:.2f} s)")
    x = np.stack(xs)
    for threads, label in ((1, "1 thread"), (0, f"default threads (cpus={os.cpu_count()})")):
        sess = make_session(model_dir, name, threads)
        for bs in sorted({1, batch}):
            sess.run(None, {meta["input_name"]: x[:bs]})  # warm-up
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 3.0 or done < bs * 3:
                i = done % max(1, len(x) - bs + 1)
                sess.run(None, {meta["input_name"]: x[i:i + bs]})
                done += bs
            dt = time.perf_counter() - t0
            print(f"inference {name} batch {bs:3d}, {label}: {done / dt:8.1f} images/s "
                  f"({1000 * dt / done:.1f} ms/image)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--images", required=True, help="folder of images (class = first sub-folder)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--out", help="save embeddings as this .npy (+ same name .json with files/classes)")
    ap.add_argument("--save-inputs", help="also save the preprocessed network inputs [N,3,H,W] float32 .npy")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    ap.add_argument("--bench", action="store_true", help="print images/s for preprocessing and inference")
    ap.add_argument("--bench-rounds", type=int, default=1)
    args = ap.parse_args(argv)

    model_dir, root = Path(args.model_dir), Path(args.images)
    meta = load_model_meta(model_dir, args.model)
    files = list_images(root)
    if not files:
        raise SystemExit(f"no images under {root}")
    if args.bench:
        bench(model_dir, args.model, meta, root, files, args.bench_rounds, args.batch)
        return

    t0 = time.perf_counter()
    x = np.stack([preprocess(root / f, meta) for f, _ in files])
    t1 = time.perf_counter()
    if args.save_inputs:
        np.save(args.save_inputs, x)
        print(f"saved preprocessed inputs {x.shape} to {args.save_inputs}")
    sess = make_session(model_dir, args.model, args.threads)
    emb = embed_batches(sess, meta, x, args.batch)
    t2 = time.perf_counter()
    print(f"{len(files)} images, {emb.shape[1]}-d: preprocess {t1 - t0:.2f} s, inference {t2 - t1:.2f} s")

    labels = [c for _, c in files]
    classes = sorted(set(labels))
    if len(classes) > 1 and "" not in classes:
        counts = {c: labels.count(c) for c in classes}
        print("classes: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        p = loo_precision(emb, labels)
        print("leave-one-out precision (exact cosine): "
              + "  ".join(f"@{k} {v:.3f}" for k, v in p.items()))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, emb)
        side = out.with_suffix(".json")
        side.write_text(json.dumps({
            "model": args.model,
            "images_root": str(root.resolve()),
            "files": [f for f, _ in files],
            "classes": labels,
            "dims": int(emb.shape[1]),
        }, indent=1) + "\n")
        print(f"saved {out} {emb.shape} and {side}")


if __name__ == "__main__":
    sys.exit(main())
