#!/usr/bin/env python3
"""Near-duplicate variants of a photo set (DATA.md): for each photo, copies resized 50 %, cropped to a
random 80 %, rotated ±5°, JPEG quality 30, darker ×0.6, brighter ×1.4 and flipped. Deterministic (seeded).

    make_variants.py SRC_DIR OUT_DIR [--per-photo N]

Writes OUT_DIR/<class>/<stem>__<variant>.jpg (and the originals as <stem>__orig.jpg, quality 95) and prints a count.
"""
import argparse
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

VARIANTS = ["half", "crop80", "rot5", "jpeg30", "dark", "bright", "flip"]


def variant(img: Image.Image, name: str, rng: random.Random) -> Image.Image:
    w, h = img.size
    if name == "half":
        return img.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)
    if name == "crop80":
        cw, ch = int(w * 0.8), int(h * 0.8)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch))
    if name == "rot5":
        return img.rotate(rng.choice([-5, 5]), resample=Image.BILINEAR, expand=False)
    if name == "dark":
        return ImageEnhance.Brightness(img).enhance(0.6)
    if name == "bright":
        return ImageEnhance.Brightness(img).enhance(1.4)
    if name == "flip":
        return ImageOps.mirror(img)
    return img  # jpeg30: the quality is applied when saving


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--per-photo", type=int, default=len(VARIANTS))
    a = ap.parse_args()
    rng = random.Random(20261126)
    n = 0
    for path in sorted(Path(a.src).rglob("*")):
        if path.suffix.lower() not in {".webp", ".jpg", ".jpeg", ".png"}:
            continue
        cls = path.parent.name
        dst = Path(a.out) / cls
        dst.mkdir(parents=True, exist_ok=True)
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        img.save(dst / f"{path.stem}__orig.jpg", quality=95)
        n += 1
        for name in VARIANTS[: a.per_photo]:
            variant(img, name, rng).save(dst / f"{path.stem}__{name}.jpg", quality=30 if name == "jpeg30" else 90)
            n += 1
    print(f"{n} images in {a.out}")


if __name__ == "__main__":
    main()
