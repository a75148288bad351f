#!/usr/bin/env python3
"""Regenerate the image fixtures of the imgsim-pipeline tests (tests/fixtures/).

Sources (all public domain / CC0, see tests/fixtures/CREDITS):
  .cache/data/skimage/{chelsea,coffee}.png   scikit-image sample data (CC0)
  .cache/data/gcompris/<class>/*.webp        gcompris-qt-data photos (Public Domain / CC0-1.0)

Run:  .cache/venv/bin/python scripts/make_pipeline_fixtures.py
Then: scripts/make_parity_reference.sh   (reference embeddings for the parity test)
Needs Pillow with JPEG/WebP/TIFF support. The committed files were made with Pillow 13.0.
"""

import io
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / ".cache" / "data"
OUT = ROOT / "tests" / "fixtures"

PARITY_GCOMPRIS = [  # (source, output name, transcode to JPEG?)
    ("animals/farm_cat.webp", "farm_cat.jpg", True),          # 1024x768 -> JPEG decoded at 1/2 DCT scale
    ("buildings/mon_usa_statueofLiberty.webp", "statue_of_liberty.jpg", True),  # 768x1024 portrait
    ("animals/world_crocodile.webp", "world_crocodile.webp", False),  # 1024x506, ICC + EXIF
    ("buildings/cat_brandenburgGate.webp", "brandenburg_gate.webp", False),
    ("fish/cat_fish22.webp", "fish22.webp", False),
    ("tools/cat_multimeter3.webp", "multimeter3.webp", False),  # portrait 173x320
]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def main():
    for sub in ("formats", "exif", "alpha", "grey", "limits", "parity"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    chelsea = Image.open(SRC / "skimage" / "chelsea.png").convert("RGB")
    coffee = Image.open(SRC / "skimage" / "coffee.png").convert("RGB")

    # --- every supported format, same small picture -------------------------------------------
    small = chelsea.resize((150, 100), Image.Resampling.LANCZOS)
    small.save(OUT / "formats" / "chelsea.png", optimize=True)
    small.save(OUT / "formats" / "chelsea.jpg", quality=92)
    small.save(OUT / "formats" / "chelsea.webp", lossless=True)
    small.save(OUT / "formats" / "chelsea.bmp")
    small.save(OUT / "formats" / "chelsea.tiff", compression="tiff_lzw")
    # GIF: two frames, the first is the picture, the second is all black (first frame must be used)
    pal = small.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    black = Image.new("P", small.size, 0)
    black.putpalette(pal.getpalette())
    pal.save(OUT / "formats" / "chelsea.gif", save_all=True, append_images=[black], duration=100, loop=0)
    # An unsupported but recognised format (PNM) and a text file
    small.resize((15, 10)).save(OUT / "formats" / "chelsea.ppm")
    (OUT / "formats" / "not_an_image.txt").write_text("This is a text file, not an image.\n")

    # --- EXIF orientation ------------------------------------------------------------------------
    up = coffee.resize((96, 64), Image.Resampling.LANCZOS)
    up.save(OUT / "exif" / "upright.jpg", quality=95, subsampling=0)
    # stored pixels such that applying the tag gives `up` back (Pillow transpose constants)
    stored = {
        3: up.transpose(Image.Transpose.ROTATE_180),
        6: up.transpose(Image.Transpose.ROTATE_90),   # display: rotate 90 clockwise
        8: up.transpose(Image.Transpose.ROTATE_270),  # display: rotate 90 counter-clockwise
        2: up.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    for tag, img in stored.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        img.save(OUT / "exif" / f"orientation{tag}.jpg", quality=95, subsampling=0, exif=exif.tobytes())

    # --- alpha -----------------------------------------------------------------------------------
    a = Image.new("RGBA", (32, 32), (0, 0, 255, 0))           # fully transparent blue
    for y in range(32):
        for x in range(0, 10):
            a.putpixel((x, y), (255, 0, 0, 255))                # opaque red, x 0..9
        for x in range(10, 20):
            a.putpixel((x, y), (0, 255, 0, 128))                # half-transparent green, x 10..19
    a.save(OUT / "alpha" / "rgba.png")
    a.save(OUT / "alpha" / "rgba.webp", lossless=True)
    # palette PNG with a transparent index (tRNS)
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0, 200, 30, 40] + [0] * (254 * 3))
    for y in range(16):
        for x in range(8, 16):
            p.putpixel((x, y), 1)
    p.save(OUT / "alpha" / "palette_trns.png", transparency=0)

    # --- greyscale -------------------------------------------------------------------------------
    g = small.convert("L")
    g.save(OUT / "grey" / "chelsea_l.png")
    g.save(OUT / "grey" / "chelsea_l.jpg", quality=92)

    # --- limits: headers that claim huge sizes ----------------------------------------------------
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    (OUT / "limits" / "bomb_100000x100000.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    # JPEG: patch the SOF0 dimensions of a tiny JPEG to 60000x60000
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buf, "JPEG", quality=50)
    j = bytearray(buf.getvalue())
    i = j.index(b"\xff\xc0")
    j[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    (OUT / "limits" / "bomb_60000x60000.jpg").write_bytes(bytes(j))
    # GIF: logical screen and first frame 60000x60000, tiny LZW data
    gif = bytearray(b"GIF89a" + struct.pack("<HH", 60000, 60000) + b"\x80\x00\x00" + b"\0\0\0\xff\xff\xff")
    gif += b"\x2c" + struct.pack("<HHHH", 0, 0, 60000, 60000) + b"\x00" + b"\x02\x02\x44\x01\x00" + b"\x3b"
    (OUT / "limits" / "bomb_60000x60000.gif").write_bytes(bytes(gif))

    # --- parity photos ---------------------------------------------------------------------------
    shutil.copy(SRC / "skimage" / "chelsea.png", OUT / "parity" / "chelsea.png")
    coffee.save(OUT / "parity" / "coffee.jpg", quality=90)
    for src, name, to_jpeg in PARITY_GCOMPRIS:
        if to_jpeg:
            Image.open(SRC / "gcompris" / src).convert("RGB").save(OUT / "parity" / name, quality=90)
        else:
            shutil.copy(SRC / "gcompris" / src, OUT / "parity" / name)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures written under {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
