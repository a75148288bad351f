#!/usr/bin/env python3
"""Generate tests/fixtures/hostile/: small files that attack the image pipeline (issue 9).

Deterministic (fixed pixel data, no timestamps). Run with the project's venv:

    .cache/venv/bin/python scripts/make_hostile_fixtures.py

Every file stays under ~50 KB. Expected outcomes (SQLSTATE of the error the SQL side raises, or
`ok`) live in tests/fixtures/hostile/manifest.tsv, which src/pipeline/tests/hostile.rs checks
with the default limits: 54000 = LimitExceeded, 22P03 = InvalidInput, 0A000 = Unsupported.
"""

import io
import os
import struct
import zlib

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hostile")
FORMATS = os.path.join(ROOT, "tests", "fixtures", "formats")

manifest = []


def put(name, data, outcome, why):
    assert len(data) <= 50 * 1024 + 1024, (name, len(data))
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    manifest.append((name, outcome, why))


def pil(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def gradient(w, h):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256) for y in range(h) for x in range(w)])
    return img


# --- PNG --------------------------------------------------------------------------------------

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png(w, h, rows, depth=8, color=2, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return PNG_SIG + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def png_flat(w, h, rgb=(40, 120, 200)):
    row = b"\x00" + bytes(rgb) * w
    return png(w, h, row * h)


put("tall_1x1000000.png", png_flat(1, 1_000_000), "ok", "1 x 1,000,000 px: resize of the crop only")
put("wide_20000x1.png", png_flat(20000, 1), "ok", "20000 x 1 px")
put("wide_65535x1.png", png_flat(65535, 1), "ok", "65535 x 1 px")
put("tall_3x40000.png", png_flat(3, 40000), "ok", "3 x 40000 px")
put("png_ihdr_60000x60000_tiny.png", png(60000, 60000, b"\x00" * 16), "54000", "IHDR 3.6 G px, 16 bytes of data")
put("png_ihdr_2147483647x1.png", png(2147483647, 1, b"\x00" * 16), "54000", "IHDR width 2^31-1")
# Under max_pixels, but 36 M px x 8 bytes (RGBA16) is over the 256 MiB decode budget: refused
# from the header, nothing allocated.
put("png_rgba16_6000x6000_tiny.png", png(6000, 6000, b"\x00" * 16, depth=16, color=6), "54000",
    "RGBA16 6000x6000: over the decode memory budget")
# Within every limit but the data stops after a few rows: a bounded buffer, then invalid input.
put("png_3000x3000_truncated_idat.png", png(3000, 3000, (b"\x00" + b"\x10" * 9000) * 4), "22P03",
    "9 M px declared, 4 rows of data")
# A metadata decompression bomb: 24 MB of zeros in an iCCP profile.
iccp = b"icc\x00\x00" + zlib.compress(b"\x00" * (24 << 20), 9)
put("png_iccp_bomb.png", png(8, 8, (b"\x00" + b"\x80" * 24) * 8, extra=chunk(b"iCCP", iccp)), "ok",
    "24 MB iCCP profile (zlib bomb) on an 8x8 image: inflated up to the 16 MiB header allowance, then dropped")
# APNG: 400 frames; only the first (default image) is decoded.
frames = [Image.new("RGB", (32, 32), ((i * 37) % 256, (i * 11) % 256, 90)) for i in range(400)]
put("apng_400_frames.png", pil(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=10), "ok",
    "APNG, 400 frames")
put("png_bad_crc_ihdr.png", PNG_SIG + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 0)
    + b"\x00\x00\x00\x00", "22P03", "IHDR with a wrong CRC")

# --- GIF --------------------------------------------------------------------------------------

def gif(screen_w, screen_h, frames, loop=True):
    """frames: list of (left, top, w, h, pixels bytes (indices 0..3))."""
    out = b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x81, 0, 0)  # 4-colour global table
    out += bytes([0, 0, 0, 255, 255, 255, 200, 30, 40, 30, 200, 40])
    if loop:
        out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for (l, t, w, h, px) in frames:
        out += b"\x2c" + struct.pack("<HHHHB", l, t, w, h, 0)
        out += b"\x02" + lzw_gif(px, 2) + b"\x00"
    return out + b"\x3b"


def lzw_gif(indices, min_size):
    """Uncompressed-style LZW stream: a clear code before every symbol keeps the code size fixed."""
    clear, end = 1 << min_size, (1 << min_size) + 1
    size = min_size + 1
    bits, nbits, data = 0, 0, bytearray()

    def emit(code):
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += size
        while nbits >= 8:
            data.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    for i in indices:
        emit(clear)
        emit(i)
    emit(end)
    if nbits:
        data.append(bits & 0xFF)
    out = bytearray()
    for k in range(0, len(data), 255):
        part = data[k:k + 255]
        out += bytes([len(part)]) + part
    return bytes(out)


put("gif_screen_65535x65535.gif", gif(65535, 65535, [(0, 0, 1, 1, b"\x02")]), "54000",
    "logical screen 65535 x 65535, one 1x1 frame")
put("gif_frame_larger_than_screen.gif", gif(8, 8, [(0, 0, 65535, 65535, b"\x02")]), "54000",
    "8x8 screen, 65535x65535 frame")
put("gif_frame_offset_outside.gif", gif(8, 8, [(60000, 60000, 4, 4, b"\x02" * 16)]), "ok",
    "frame placed far outside the screen")
put("gif_3000_frames.gif", gif(16, 16, [(i % 16, (i // 16) % 16, 1, 1, bytes([i % 4])) for i in range(3000)]),
    "ok", "3000 frames; only the first is decoded")
put("gif_no_frames.gif", gif(16, 16, []), "22P03", "screen descriptor, no image")

# --- BMP --------------------------------------------------------------------------------------

def bmp(w, h, bpp=24, data=b"", compression=0):
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(data), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + len(data), 0, 0, 14 + 40)
    return head + info + data


put("bmp_60000x60000_tiny.bmp", bmp(60000, 60000, data=b"\x00" * 64), "54000", "BMP header 3.6 G px")
put("bmp_negative_huge.bmp", bmp(-5, -2147483647, data=b"\x00" * 64), "22P03", "negative width, huge top-down height")
put("bmp_3000x3000_tiny.bmp", bmp(3000, 3000, data=b"\x00" * 64), "22P03", "9 M px declared, 64 bytes of data")
put("bmp_rle8_2000x2000.bmp", bmp(2000, 2000, bpp=8, data=b"\x00\x01" * 8, compression=1), "22P03",
    "RLE8 with a truncated stream")

# --- TIFF -------------------------------------------------------------------------------------

def tiff(w, h, strip=b"\x00" * 16, extra=()):
    entries = [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, len(strip)),
    ] + list(extra)
    entries.sort()
    ifd_off = 8 + len(strip)
    out = b"II*\x00" + struct.pack("<I", ifd_off) + strip
    out += struct.pack("<H", len(entries))
    for tag, typ, count, val in entries:
        if typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, val, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, val)
    return out + struct.pack("<I", 0)


put("tiff_60000x60000_tiny.tif", tiff(60000, 60000), "54000", "TIFF 3.6 G px declared")
put("tiff_4000x4000_tiny.tif", tiff(4000, 4000), "22P03", "16 M px grey declared, 16 bytes of strip")
put("tiff_huge_strip_count.tif", tiff(64, 64, extra=[(273 + 1000, 4, 0x3FFFFFFF, 8)]), "22P03",
    "unknown tag with a 1 G-entry count pointing nowhere")
pages = [gradient(64, 48), Image.new("RGB", (2000, 2000), (9, 9, 9)), Image.new("RGB", (32, 32), (1, 2, 3))]
put("tiff_multipage.tif", pil(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate"),
    "ok", "3 pages (2nd is 2000x2000); the first is decoded")

# --- WebP -------------------------------------------------------------------------------------

def riff(chunks):
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunk(kind, data):
    pad = b"\x00" if len(data) % 2 else b""
    return kind + struct.pack("<I", len(data)) + data + pad


def vp8x(w, h, flags=0):
    return webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))


def vp8l_header(w, h):
    v = (w - 1) | ((h - 1) << 14)
    return b"\x2f" + struct.pack("<I", v)


put("webp_vp8x_16384x16384.webp", riff([vp8x(16384, 16384), webp_chunk(b"VP8L", vp8l_header(16384, 16384) + b"\x00" * 8)]),
    "54000", "VP8X canvas 268 M px")
put("webp_vp8l_16384x16384.webp", riff([webp_chunk(b"VP8L", vp8l_header(16384, 16384) + b"\x00" * 8)]), "22P03",
    "VP8L 16384 x 16384, 8 bytes of data (image-webp rejects the header: 0x0)")
put("webp_vp8l_2800x2800_tiny.webp", riff([webp_chunk(b"VP8L", vp8l_header(2800, 2800) + b"\x00" * 8)]), "22P03",
    "VP8L 7.8 M px declared, 8 bytes of data")
put("webp_chunk_size_4g.webp", b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WEBP" + b"VP8L" + struct.pack("<I", 0xFFFFFFF0)
    + vp8l_header(16, 16) + b"\x00" * 8, "22P03", "chunk sizes of 4 GB in a 40-byte file")
anim = [Image.new("RGB", (24, 24), ((i * 29) % 256, 60, (i * 7) % 256)) for i in range(300)]
put("webp_animated_300_frames.webp", pil(anim[0], "WEBP", save_all=True, append_images=anim[1:], duration=10,
                                          lossless=True), "ok", "animated WebP, 300 frames")

# --- JPEG -------------------------------------------------------------------------------------

def jpeg_segments(data):
    """Split a JPEG into (marker, bytes) pieces; a scan piece includes its entropy-coded data."""
    out, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF
        m = data[i + 1]
        if m == 0xD9:
            out.append((m, data[i:i + 2]))
            break
        ln = struct.unpack(">H", data[i + 2:i + 4])[0]
        j = i + 2 + ln
        if m == 0xDA:
            while not (data[j] == 0xFF and data[j + 1] not in (0x00,) and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        out.append((m, data[i:j]))
        i = j
    return out


prog = pil(gradient(160, 120), "JPEG", quality=80, progressive=True)
put("jpeg_progressive_ok.jpg", prog, "ok", "a normal progressive JPEG")
segs = jpeg_segments(pil(gradient(16, 16), "JPEG", quality=80, progressive=True))
scans = [s for (m, s) in segs if m == 0xDA]
head = b"".join(s for (m, s) in segs if m not in (0xDA, 0xD9))
# The smallest scan repeated: 2000 scans in all (a small image keeps the file small; the limit is
# on the scan count, checked before decoding).
bomb = b"\xff\xd8" + head + b"".join(scans) + min(scans, key=len) * (2000 - len(scans)) + b"\xff\xd9"
assert len(bomb) < 52 * 1024, len(bomb)
put("jpeg_scan_bomb_2000.jpg", bomb, "54000", "progressive JPEG with 2000 scans")
base = pil(gradient(64, 64), "JPEG", quality=80)


def with_sof_size(data, w, h):
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


put("jpeg_sof_65500x65500.jpg", with_sof_size(base, 65500, 65500), "54000", "SOF 65500 x 65500, 64x64 data")
put("jpeg_sof_6000x6000.jpg", with_sof_size(base, 6000, 6000), "ok",
    "SOF 36 M px (in budget), 64x64 of data: decodes to a mostly grey image")
put("jpeg_sof_zero_height.jpg", with_sof_size(base, 64, 0), "0A000", "SOF height 0 (DNL, not supported)")

# --- truncated files and wrong magic ------------------------------------------------------------

for f in sorted(os.listdir(FORMATS)):
    ext = f.rsplit(".", 1)[1]
    if ext in ("ppm", "txt"):
        continue
    data = open(os.path.join(FORMATS, f), "rb").read()
    put(f"truncated_{ext}.{ext}", data[: len(data) // 3], "22P03", f"{f} cut to a third")
    put(f"truncated_header_{ext}.{ext}", data[:20], "22P03", f"{f} cut to 20 bytes")

png_data = open(os.path.join(FORMATS, "chelsea.png"), "rb").read()
jpg_data = open(os.path.join(FORMATS, "chelsea.jpg"), "rb").read()
put("wrong_magic_png.png", b"\x89PNX" + png_data[4:], "22P03", "PNG with a damaged signature")
put("jpeg_body_png_magic.png", PNG_SIG + jpg_data, "22P03", "PNG signature on JPEG data")
put("png_body_gif_magic.gif", b"GIF89a" + png_data[6:], "22P03", "GIF signature on PNG data")
put("only_magic.jpg", b"\xff\xd8\xff", "22P03", "a JPEG signature and nothing else")
put("ppm_unsupported.ppm", open(os.path.join(FORMATS, "chelsea.ppm"), "rb").read()[:4000], "0A000",
    "a recognised but unsupported format")

with open(os.path.join(OUT, "manifest.tsv"), "w") as f:
    f.write("# file\texpected (ok | SQLSTATE: 54000 limit, 22P03 invalid, 0A000 unsupported, 53200 OOM)\twhat\n")
    for name, outcome, why in manifest:
        f.write(f"{name}\t{outcome}\t{why}\n")
print(f"{len(manifest)} fixtures in {OUT}")
