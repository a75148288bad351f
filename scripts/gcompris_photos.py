#!/usr/bin/env python3
"""Extract a labelled set of real, freely licensed photos from Debian's ``gcompris-qt-data``.

Steps: ``apt-get download gcompris-qt-data`` into a cache folder (skipped when the .deb is
there), ``dpkg-deb -x`` (skipped when already extracted), parse the Qt resource files
(``usr/share/gcompris-qt/rcc/*.rcc``, format below), read the per-folder README credits and
keep only photos whose licence is Public Domain or CC0. They are written as
``OUT/<class>/<file>`` with ``OUT/CREDITS.tsv`` (class, file, source, licence, copyright).
Re-running with the same output does nothing (files whose bytes are already there are kept).

Class mapping (5 visually distinct groups, used as the category-retrieval test):

  categorization.rcc  .../categorization/resource/images/
      fishes/      -> fish
      monuments/   -> buildings
      tools/       -> tools
      renewable/   -> energy      (wind turbines, solar panels, dams: renewable-energy plants)
      others/      -> (skipped)   a grab bag of unrelated objects, not a visual class
  explore_farm_animals.rcc, explore_world_animals.rcc  (photos of the animals) -> animals
  explore_monuments.rcc  (photos of the monuments)                            -> buildings

Only files that their README credits by name with a Public Domain or CC0 licence are kept
(3.1-2: tools/screwDriver.webp has no credit, germany/aulaPalatina.webp is credited under a
misspelt name, renewable/windmill6 is GPL, three explore_monuments photos are CC-BY-SA), and a
photo whose Wikimedia source URL was already taken is dropped (3 monuments appear twice).
This gives 187 photos: animals 24, buildings 69, energy 28, fish 28, tools 38.

Files get a prefix from their source (``cat_``, ``farm_``, ``world_``, ``mon_``) so names
never collide inside a class folder.

Qt rcc format (version 1-3, big-endian): ``qres``, u32 version, u32 tree offset, u32 data
offset, u32 names offset, [v3: u32 overall flags]. The tree is an array of nodes of 14 bytes
(+8 byte mtime from v2): u32 name offset, u16 flags (1 zlib, 2 directory, 4 zstd), then for a
directory u32 child count + u32 first child index, for a file u16 country + u16 language +
u32 data offset. A name is u16 length, u32 hash, UTF-16BE chars. A data entry is u32 size +
bytes; zlib entries are qCompress blobs (u32 uncompressed size + zlib stream).

Usage: gcompris_photos.py --out .cache/data/gcompris [--cache .cache/debs]
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gcompris-qt-data"
RCC_DIR = "usr/share/gcompris-qt/rcc"
PHOTO_EXTS = (".webp", ".jpg", ".jpeg", ".png")

CATEGORIZATION_CLASSES = {
    "fishes": "fish",
    "monuments": "buildings",
    "tools": "tools",
    "renewable": "energy",
    # "others": skipped (unrelated objects, no visual class)
}

# rcc file -> (file prefix, class, folder inside the resource tree holding the photos)
EXPLORE_SETS = {
    "explore_farm_animals.rcc": ("farm", "animals", "gcompris/src/activities/explore_farm_animals/resource/animals"),
    "explore_world_animals.rcc": ("world", "animals", "gcompris/src/activities/explore_world_animals/resource/animals"),
    # one README in resource/ credits the photos of all country sub-folders (egypt/, france/, ...)
    "explore_monuments.rcc": ("mon", "buildings", "gcompris/src/activities/explore_monuments/resource"),
}


# ---------------------------------------------------------------------------------------------
# rcc parser
# ---------------------------------------------------------------------------------------------


def parse_rcc(data: bytes) -> dict[str, bytes]:
    """Return {path: file bytes} for every file in a Qt binary resource."""
    if data[:4] != b"qres":
        raise ValueError("not a Qt rcc file (no qres magic)")
    version, tree_off, data_off, names_off = struct.unpack_from(">IIII", data, 4)
    if version not in (1, 2, 3):
        raise ValueError(f"unsupported rcc version {version}")
    node_size = 14 if version == 1 else 22

    def name_at(off):
        (length,) = struct.unpack_from(">H", data, names_off + off)
        start = names_off + off + 6
        return data[start:start + 2 * length].decode("utf-16-be")

    def payload(flags, off):
        (size,) = struct.unpack_from(">I", data, data_off + off)
        raw = data[data_off + off + 4:data_off + off + 4 + size]
        if flags & 4:
            raise ValueError("zstd-compressed rcc entries are not supported")
        if flags & 1:
            (expect,) = struct.unpack_from(">I", raw, 0)
            out = zlib.decompress(raw[4:])
            if len(out) != expect:
                raise ValueError("bad zlib entry size")
            return out
        return raw

    files = {}

    def walk(index, prefix):
        base = tree_off + index * node_size
        name_off, flags = struct.unpack_from(">IH", data, base)
        name = name_at(name_off) if index else ""
        path = f"{prefix}/{name}" if prefix else name
        if flags & 2:
            count, first = struct.unpack_from(">II", data, base + 6)
            for child in range(first, first + count):
                walk(child, path)
        else:
            (off,) = struct.unpack_from(">I", data, base + 10)
            files[path] = payload(flags, off)

    walk(0, "")
    return files


# ---------------------------------------------------------------------------------------------
# README credits
# ---------------------------------------------------------------------------------------------

FREE_LICENCES = re.compile(r"public\s*domain|\bcc0\b|cc-0|cc0-1\.0|creative commons zero", re.I)


def parse_readme(text: str) -> dict[str, dict]:
    """Parse a gcompris credits README into {relative file path: {copyright, source, licence}}.

    The READMEs use a Debian-copyright-like layout: blank-line separated blocks of
    ``Copyright:``, ``License:``, ``Source:`` fields and a ``Files:`` field whose value (same line
    and/or following lines) lists the files, relative to the README's folder.
    """
    entries: dict[str, dict] = {}
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for raw in block.splitlines():
            line = raw.strip()
            if not line:
                continue
            m = re.match(r"^([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$", line)
            key = m.group(1).strip().lower() if m and not line.lower().startswith(("http:", "https:")) else None
            if key is None:
                if in_files:
                    files.extend(line.split())
                continue
            value = m.group(2).strip()
            in_files = key in ("files", "file")
            if in_files:
                files.extend(value.split())
            elif key in ("copyright", "author", "authors"):
                fields["copyright"] = value
            elif key.startswith("licen"):
                fields["licence"] = value
            elif key in ("source", "sources", "url"):
                fields["source"] = value
        for f in files:
            entries[f] = fields
    return entries


# ---------------------------------------------------------------------------------------------
# download / extract
# ---------------------------------------------------------------------------------------------


def extracted_root(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(glob.glob(str(cache / f"{PACKAGE}_*.deb")))
    if not debs:
        print(f"apt-get download {PACKAGE} -> {cache}")
        subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, check=True)
        debs = sorted(glob.glob(str(cache / f"{PACKAGE}_*.deb")))
    deb = Path(debs[-1])
    root = cache / deb.stem
    marker = root / ".extracted"
    if not marker.exists():
        print(f"dpkg-deb -x {deb.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        marker.write_text(deb.name + "\n")
    return root


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def collect(rcc_dir: Path, verbose: bool):
    """[(class, out_name, bytes, source, licence, copyright)], plus skipped counts."""
    photos = []
    skipped: dict = {}

    def take(files: dict, folder: str, cls: str, prefix: str, origin: str):
        """Every photo below ``folder`` credited in ``folder/README`` with a free licence."""
        readme = files.get(folder + "/README")
        credits = parse_readme(readme.decode("utf-8", "replace")) if readme is not None else {}
        for path in sorted(files):
            if not path.startswith(folder + "/") or not path.lower().endswith(PHOTO_EXTS):
                continue
            rel = path[len(folder) + 1:]
            c = credits.get(rel, {})
            lic = c.get("licence", "")
            if not FREE_LICENCES.search(lic):
                k = (origin, f"licence {lic}" if lic else "no credit in README")
                skipped[k] = skipped.get(k, 0) + 1
                if verbose:
                    print(f"  skip {origin}:{rel}: licence {lic!r}")
                continue
            name = f"{prefix}_{rel.replace('/', '_')}"
            photos.append((cls, name, files[path], c.get("source", ""), lic, c.get("copyright", "")))

    cat = parse_rcc((rcc_dir / "categorization.rcc").read_bytes())
    base = "gcompris/src/activities/categorization/resource/images"
    for folder, cls in CATEGORIZATION_CLASSES.items():
        take(cat, f"{base}/{folder}", cls, "cat", f"categorization/{folder}")

    for rcc_name, (prefix, cls, folder) in EXPLORE_SETS.items():
        files = parse_rcc((rcc_dir / rcc_name).read_bytes())
        take(files, folder, cls, prefix, rcc_name)

    # The same Wikimedia photo is used by several activities (e.g. the Colosseum): keep the first
    # copy only, so that the category-retrieval test has no near-duplicate pairs.
    seen: set = set()
    unique = []
    for p in photos:
        src = p[3].strip().rstrip("/")
        if src and src in seen:
            k = ("any", "same Wikimedia source as a kept photo")
            skipped[k] = skipped.get(k, 0) + 1
            if verbose:
                print(f"  skip {p[1]}: same source photo as an earlier file ({src})")
            continue
        seen.add(src)
        unique.append(p)
    return unique, skipped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (e.g. .cache/data/gcompris)")
    ap.add_argument("--cache", default=str(REPO_ROOT / ".cache" / "debs"), help="where the .deb is kept")
    ap.add_argument("-v", "--verbose", action="store_true", help="list skipped files")
    args = ap.parse_args(argv)

    root = extracted_root(Path(args.cache))
    photos, skipped = collect(root / RCC_DIR, args.verbose)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    changed = 0
    counts: dict[str, int] = {}
    rows = []
    for cls, name, data, source, lic, copyright_ in photos:
        changed += write_if_changed(out / cls / name, data)
        counts[cls] = counts.get(cls, 0) + 1
        rows.append((cls, name, source, lic, copyright_))
    # remove stale files from an earlier run with other rules
    keep = {(c, n) for c, n, *_ in rows}
    for cls_dir in out.iterdir():
        if cls_dir.is_dir():
            for f in cls_dir.iterdir():
                if (cls_dir.name, f.name) not in keep:
                    f.unlink()
                    changed += 1
    import io

    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["class", "file", "source", "licence", "copyright"])
    for r in sorted(rows):
        w.writerow([" ".join(str(x).split()) for x in r])
    changed += write_if_changed(out / "CREDITS.tsv", buf.getvalue().encode())

    for cls in sorted(counts):
        print(f"{cls:10s} {counts[cls]:4d}")
    print(f"{'total':10s} {sum(counts.values()):4d}   ({changed} files written or removed in {out})")
    if skipped:
        print("skipped: " +
              "; ".join(f"{o}: {why} x{n}" for (o, why), n in sorted(skipped.items())))


if __name__ == "__main__":
    sys.exit(main())
